"""The agent's error types: one base class, a stable code and a technician hint on each.

Families:
- DeviceError: something about a phone (gone, not authorised, timed out, sent bad data,
  refused a command, or its USB interface is held by another program). A DeviceError
  ends that phone's session cleanly; it never stops the agent.
- ConfigError: the configuration is wrong; the agent refuses to start.
- CertificateError: a certificate failed verification (one type, a precise reason).
- StoreError: the journal could not be written (disk full, corruption).
- ControlError / ControlApiError: the technician control API refused a request (server
  side) or could not be reached / answered with a refusal (client side).

One convention for machine-readable codes (journal, certificates' reasons, the API,
metrics, tests): every error has `code`, a stable snake_case string.
- An error class has one code, its class attribute `code`.
- A family that is one type with many precise reasons (CertificateError, as sigstore-
  python's single verification error; ControlError and ControlApiError, the API's
  refusals) takes the reason as its first argument, and the instance's `code` is that
  reason. `CertificateError.reason` reads the same value.
Every code is listed in docs/codes.md (tests/core/test_codes.py holds the two together).
"""

from __future__ import annotations

from typing import ClassVar


class WipeAgentError(Exception):
    """Base of every error the agent raises on purpose.

    `code` is stable and machine-readable; `hint` is a short instruction a bench
    technician can act on.
    """

    code: str = "error"
    default_hint: ClassVar[str] = "see the agent log for details"

    def __init__(self, message: str, *, hint: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


# -- phones -----------------------------------------------------------------------------


class DeviceError(WipeAgentError):
    """A problem with one phone; ends that phone's session only."""

    code = "device_error"
    default_hint = "unplug the phone, check the cable and plug it in again"


class DeviceGone(DeviceError):
    """The phone disconnected (unplugged, rebooted, crashed)."""

    code = "device_gone"
    default_hint = "check the cable; if the phone is rebooting, wait for it"


class DeviceTimeout(DeviceError, TimeoutError):
    """The phone did not answer in time. Also a built-in TimeoutError."""

    code = "device_timeout"
    default_hint = "the phone stopped answering: unplug it and plug it in again"


class NotAuthorised(DeviceError):
    """The phone has not (yet) authorised this bench."""

    code = "not_authorised"
    default_hint = "unlock the phone and tap Allow USB debugging (tick Always allow)"


class ProtocolError(DeviceError):
    """The phone sent bytes that break the protocol (malformed, oversized, bad checksum)."""

    code = "protocol_error"
    default_hint = "the phone sent malformed data: unplug it and set it aside for inspection"


class BadDeviceData(DeviceError):
    """The phone answered, but a value failed validation."""

    code = "bad_device_data"
    default_hint = "the phone reported an implausible value: set it aside for inspection"


class IdentityMismatch(DeviceError):
    """A different phone answered where the session's phone was expected."""

    code = "identity_mismatch"
    default_hint = "a different phone is on this port: put the original phone back"


class CommandFailed(DeviceError):
    """A command ran on the phone but reported failure (a non-zero exit status)."""

    code = "command_failed"
    default_hint = "the phone refused a command: see the agent log"


class UsbInterfaceBusy(DeviceError):
    """Another program (usually an `adb` server) holds the phone's USB interface."""

    code = "usb_interface_busy"
    default_hint = "stop the other program (adb kill-server), then unplug and plug the phone in"


# -- the agent's own inputs and outputs ----------------------------------------------------


class InternalError(WipeAgentError):
    """The agent failed in a way nothing anticipated (a bug, or phone input no check
    foresaw). Ends that session (with a certificate saying so), never another."""

    code = "internal_error"
    default_hint = "set the phone aside and report it with the agent log"


class ConfigError(WipeAgentError):
    """The configuration is invalid."""

    code = "config_error"
    default_hint = "fix the configuration file and start the agent again"


class StartupRefused(ConfigError):
    """`wipeagent run` cannot start for a reason a person fixes (exit 78)."""

    code = "startup_refused"


class StateDirBusy(StartupRefused):
    """Another agent holds the state directory's lock."""

    code = "state_dir_busy"
    default_hint = ("stop the other agent first (systemctl stop wipeagent), or give this "
                    "one its own state_dir")


class StoreError(WipeAgentError):
    """The journal could not be read or written."""

    code = "store_error"
    default_hint = "check free disk space on the bench PC"


RECOVER_HINT = ("stop the agent, then run `wipeagent journal recover`: it keeps the journal "
                "aside if it is damaged, re-imports the exported certificates and continues "
                "the station chain (docs/service.md)")


class JournalRefused(StoreError, ConfigError):
    """The journal cannot be used as it is: damaged, or behind the station's chain (restored
    from an older copy, replaced). A person decides (exit 78), with the recovery command."""

    code = "journal_refused"
    default_hint = RECOVER_HINT


class JournalDamaged(JournalRefused):
    """The journal file is not a readable SQLite database (zeroed, truncated, corrupt)."""

    code = "journal_damaged"


class JournalBehind(JournalRefused):
    """The journal lacks certificates the station already issued (its chain head is older
    than the chain-head record or the exported certificates), or holds another chain."""

    code = "journal_behind"


class UsbmuxWireError(WipeAgentError):
    """usbmuxd sent something that is not a valid message (its Listen connection is
    dropped and made again)."""

    code = "usbmuxd_wire"
    default_hint = "restart usbmuxd: systemctl restart usbmuxd"


# -- families with one type and many precise reasons ---------------------------------------


class CertificateError(WipeAgentError):
    """A certificate failed verification; the reason is its `code` (also `reason`)."""

    code = "certificate_error"
    default_hint = "do not trust this certificate"

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=reason)

    @property
    def reason(self) -> str:
        """The precise verification failure (the same as `code`)."""
        return self.code


class ControlError(WipeAgentError):
    """A control request that cannot be carried out; `status` is its HTTP status."""

    code = "control_error"
    default_hint = "check `wipeagent status`"

    def __init__(self, code: str, message: str, *, status: int = 409,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=code)
        self.status = status


class ControlApiError(WipeAgentError):
    """The agent refused a request (`code` from its answer) or could not be reached."""

    code = "control_api"
    default_hint = "is the agent running? (systemctl status wipeagent)"

    def __init__(self, code: str, message: str, *, status: int = 0,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=code)
        self.status = status
