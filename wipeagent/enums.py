"""The product's enumerations: plain StrEnums with no dependencies.

Kept apart from `models` (pydantic records) so that the outcome rule and the certificate
verifier, which a verify-only install runs, need nothing beyond the standard library here.
`wipeagent.models` re-exports every name.
"""

from __future__ import annotations

from enum import StrEnum


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"


class Outcome(StrEnum):
    """How a session ended. Only a verified erase may be ERASED*."""

    ERASED = "erased"
    ERASED_WITH_EXCEPTIONS = "erased_with_exceptions"
    NOT_ERASED = "not_erased"


class NistCategory(StrEnum):
    """NIST SP 800-88 Rev. 2 / IEEE 2883-2022 sanitization category."""

    CLEAR = "clear"
    PURGE = "purge"


class EncryptionType(StrEnum):
    FILE_BASED = "file_based"
    FULL_DISK = "full_disk"
    NONE = "none"
    UNKNOWN = "unknown"


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - not a password
    FAIL = "fail"
    WARN = "warn"
    INFO = "info"
    SKIPPED = "skipped"
    ERROR = "error"  # the check itself could not be carried out


class CheckKind(StrEnum):
    """What a check is evidence of (IEEE 2883 distinguishes the last two)."""

    DIAGNOSTIC = "diagnostic"  # the phone's condition (battery, storage, locks ...)
    PRECONDITION = "precondition"  # may the erase start?
    VERIFICATION = "verification"  # the sanitization technique ran to completion
    VALIDATION = "validation"  # the user data is no longer recoverable by the checked means


class IdentifierSource(StrEnum):
    """Where a phone's IMEIs came from (certificate `device.imei_source`)."""

    PHONE = "phone"  # read from the phone (Android: iphonesubinfo; iOS: lockdown)
    TECHNICIAN = "technician"  # scanned or typed by the technician at the bench


class HandoffPolicy(StrEnum):
    """What the bench does to a phone after its erase was verified (config policy.handoff)."""

    # Put back what the erase method changed (Test Harness Mode's settings), read each
    # value back, turn USB debugging off last. iPhones: forget this bench's pairing.
    RESTORE = "restore"
    # RESTORE's goal reached by a second, normal factory reset done by the technician
    # (the phone in its out-of-box state: setup wizard, no ADB keys); technician-attested.
    FINAL_RESET = "final_reset"


class HandoffResult(StrEnum):
    """What became of one hand-off item."""

    RESTORED = "restored"  # changed to its out-of-box value and read back so
    UNCHANGED = "unchanged"  # already at its out-of-box value (read)
    NOT_RESTORABLE = "not_restorable"  # known to stay as it is (the shell cannot change it)
    FAILED = "failed"  # tried, and the read-back (or the command) says it did not work
    OBSERVED = "observed"  # a reading of the phone's state (nothing to restore)
    ATTESTED = "attested"  # the technician says it was done; not verified by the agent


class HandoffStatus(StrEnum):
    COMPLETED = "completed"  # every item restored, unchanged, observed or as documented
    FAILED = "failed"  # at least one item failed, or the hand-off could not be carried out
