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
