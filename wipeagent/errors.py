"""The agent's error types: one base class, a technician hint on every error.

Families:
- DeviceError: something about a phone (gone, not authorised, timed out, sent bad data).
  A DeviceError ends that phone's session cleanly; it never stops the agent.
- ConfigError: the configuration is wrong; the agent refuses to start.
- CertificateError: a certificate failed verification (one type, a precise reason).
- StoreError: the journal could not be written (disk full, corruption).
"""

from __future__ import annotations


class WipeAgentError(Exception):
    """Base of every error the agent raises on purpose.

    `hint` is a short instruction a bench technician can act on.
    """

    code = "error"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "see the agent log for details"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def __str__(self) -> str:
        return self.message


class DeviceError(WipeAgentError):
    """A problem with one phone; ends that phone's session only."""

    code = "device_error"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "unplug the phone, check the cable and plug it in again"


class DeviceGone(DeviceError):
    """The phone disconnected (unplugged, rebooted, crashed)."""

    code = "device_gone"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "check the cable; if the phone is rebooting, wait for it"


class DeviceTimeout(DeviceError, TimeoutError):
    """The phone did not answer in time. Also a built-in TimeoutError."""

    code = "device_timeout"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "the phone stopped answering: unplug it and plug it in again"


class NotAuthorised(DeviceError):
    """The phone has not (yet) authorised this bench."""

    code = "not_authorised"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "unlock the phone and tap Allow USB debugging (tick Always allow)"


class ProtocolError(DeviceError):
    """The phone sent bytes that break the protocol (malformed, oversized, bad checksum)."""

    code = "protocol_error"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "the phone sent malformed data: unplug it and set it aside for inspection"


class BadDeviceData(DeviceError):
    """The phone answered, but a value failed validation."""

    code = "bad_device_data"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "the phone reported an implausible value: set it aside for inspection"


class IdentityMismatch(DeviceError):
    """A different phone answered where the session's phone was expected."""

    code = "identity_mismatch"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "a different phone is on this port: put the original phone back"


class ConfigError(WipeAgentError):
    """The configuration is invalid."""

    code = "config_error"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "fix the configuration file and start the agent again"


class CertificateError(WipeAgentError):
    """A certificate failed verification; `reason` is a stable machine-readable code."""

    code = "certificate_error"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "do not trust this certificate"

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class StoreError(WipeAgentError):
    """The journal could not be read or written."""

    code = "store_error"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = "check free disk space on the bench PC"


RECOVER_HINT = ("stop the agent, then run `wipeagent journal recover`: it keeps the journal "
                "aside if it is damaged, re-imports the exported certificates and continues "
                "the station chain (docs/service.md)")


class JournalRefused(StoreError, ConfigError):
    """The journal cannot be used as it is: damaged, or behind the station's chain (restored
    from an older copy, replaced). A person decides (exit 78), with the recovery command."""

    code = "journal_refused"  # stable, machine-readable (journal, tests, dashboards)
    default_hint = RECOVER_HINT


class JournalDamaged(JournalRefused):
    """The journal file is not a readable SQLite database (zeroed, truncated, corrupt)."""

    code = "journal_damaged"  # stable, machine-readable (journal, tests, dashboards)


class JournalBehind(JournalRefused):
    """The journal lacks certificates the station already issued (its chain head is older
    than the chain-head record or the exported certificates), or holds another chain."""

    code = "journal_behind"  # stable, machine-readable (journal, tests, dashboards)
