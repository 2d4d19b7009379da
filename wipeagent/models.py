"""The agent's data: frozen, validated records passed between steps and journaled.

Every record is a pydantic model so that what is read back from the journal is validated
exactly like what was produced (parsing is validating). Strings that came from a phone
are already validated by the platform code before they get here.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# The enumerations live in a module of their own (no pydantic), so the certificate
# verifier and the outcome rule can use them in a verify-only install; re-exported here.
from wipeagent.enums import (
    CheckKind,
    CheckStatus,
    EncryptionType,
    HandoffPolicy,
    HandoffResult,
    HandoffStatus,
    IdentifierSource,
    NistCategory,
    Outcome,
    Platform,
)

__all__ = [
    "Booking",
    "Canary",
    "CheckKind",
    "CheckResult",
    "CheckStatus",
    "DeviceIdentity",
    "EncryptionType",
    "ErasePlan",
    "EraseRecord",
    "Evidence",
    "Frozen",
    "Handoff",
    "HandoffItem",
    "HandoffPolicy",
    "HandoffResult",
    "HandoffStatus",
    "IdentifierSource",
    "NistCategory",
    "Outcome",
    "Platform",
    "Refusal",
    "SessionRecord",
    "StationInfo",
]


class Frozen(BaseModel):
    """Base of every record: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Evidence = dict[str, str | int | float | bool | None]



class CheckResult(Frozen):
    """One check: what was looked at, how, what was found."""

    id: str = Field(pattern=r"^[a-z0-9_.]{1,64}$")
    title: str = Field(max_length=200)
    kind: CheckKind
    status: CheckStatus
    method: str = Field(max_length=500, description="how the check was made (command, service)")
    detail: str = Field(default="", max_length=1000)
    evidence: Evidence = Field(default_factory=dict)


class DeviceIdentity(Frozen):
    """Who the phone is. Everything here was validated before construction."""

    platform: Platform
    manufacturer: str = Field(max_length=64)
    model: str = Field(max_length=64)
    model_number: str = Field(default="", max_length=64)
    marketing_name: str = Field(default="", max_length=100)
    serial: str = Field(min_length=1, max_length=64)
    imeis: tuple[str, ...] = ()
    # CDMA phones: the MEID (14 hex digits), as the phone reported it.
    meid: str | None = Field(default=None, pattern=r"^[0-9A-F]{14}$")
    # Where `imeis` came from; None while there are none.
    imei_source: IdentifierSource | None = None
    udid: str | None = None
    os_name: str = Field(max_length=32)
    os_version: str = Field(max_length=32)
    security_patch: str = Field(default="", max_length=32)
    build_fingerprint: str = Field(default="", max_length=200)
    storage_capacity_bytes: int | None = Field(default=None, ge=0)
    encryption: EncryptionType = EncryptionType.UNKNOWN
    # Identifiers compared after a reboot: every key present on both sides must match.
    hardware_ids: dict[str, str] = Field(default_factory=dict)

    def mismatches(self, other: DeviceIdentity) -> list[str]:
        """The identifiers that differ between two observations of (supposedly) one phone."""
        found: list[str] = []
        if self.platform != other.platform:
            found.append("platform")
        if self.serial != other.serial:
            found.append("serial")
        if self.udid != other.udid:
            found.append("udid")
        for key in sorted(self.hardware_ids.keys() & other.hardware_ids.keys()):
            if self.hardware_ids[key] != other.hardware_ids[key]:
                found.append(key)
        return found


class Refusal(Frozen):
    """Why a step will not go ahead, in words a technician can act on."""

    code: str = Field(pattern=r"^[a-z0-9_.]{1,64}$")
    message: str
    hint: str


class ErasePlan(Frozen):
    """The sanitization a platform driver proposes for one phone."""

    method_id: str = Field(pattern=r"^[a-z0-9_.]{1,64}$")
    method: str = Field(description="the exact method, e.g. 'adb shell cmd testharness enable'")
    technique: str = Field(description="e.g. 'cryptographic erase via factory reset'")
    category: NistCategory = Field(description="the best category this method can reach here")
    manual: bool = False
    instructions: tuple[str, ...] = Field(default=(), description="steps for a manual reset")
    # Bench seconds to wait for the phone to come back after the erase was started.
    return_timeout_s: float = Field(default=600.0, gt=0)


class Canary(Frozen):
    """Random markers planted on the phone before the erase; each must be gone afterwards."""

    files: tuple[str, ...] = ()
    settings: dict[str, str] = Field(default_factory=dict)
    token: str


class EraseRecord(Frozen):
    """What was done to sanitize the phone."""

    plan: ErasePlan
    started_at: datetime
    ended_at: datetime | None = None




class HandoffItem(Frozen):
    """One setting or fact of the hand-off, with the values read and how."""

    id: str = Field(pattern=r"^[a-z0-9_.]{1,64}$")
    title: str = Field(max_length=200)
    result: HandoffResult
    before: str | None = Field(default=None, max_length=200)
    after: str | None = Field(default=None, max_length=200)
    method: str = Field(default="", max_length=500)
    detail: str = Field(default="", max_length=500)



class Handoff(Frozen):
    """The hand-off step of a session whose erase was verified."""

    policy: HandoffPolicy
    status: HandoffStatus
    started_at: datetime
    ended_at: datetime
    items: tuple[HandoffItem, ...] = ()
    attested_by: str | None = Field(default=None, max_length=100)

    @property
    def failed(self) -> tuple[HandoffItem, ...]:
        return tuple(i for i in self.items if i.result is HandoffResult.FAILED)


class Booking(Frozen):
    """The intake entry (platform booking) a phone matched."""

    reference: str = Field(default="", max_length=100)
    matched_by: str = Field(pattern=r"^(serial|imei)$")
    identifier: str = Field(max_length=64)
    source: str = Field(default="api", max_length=32)
    added_by: str | None = Field(default=None, max_length=100)


class StationInfo(Frozen):
    station_id: str
    site: str = ""
    organisation: str = ""
    tool_name: str = "wipeagent"
    tool_version: str = ""


class SessionRecord(Frozen):
    """Everything a certificate is built from: the finished session."""

    session_id: str
    slot: str
    station: StationInfo
    operator: str | None = None
    destination: str = "resale"
    started_at: datetime
    ended_at: datetime
    identity: DeviceIdentity | None
    diagnostics: tuple[CheckResult, ...] = ()
    preconditions: tuple[CheckResult, ...] = ()
    erase: EraseRecord | None = None
    verification: tuple[CheckResult, ...] = ()
    outcome: Outcome
    category: NistCategory | None = None
    reasons: tuple[str, ...] = Field(default=(), description="why not erased")
    exceptions: tuple[str, ...] = Field(default=(), description="deviations from a clean erase")
    handoff: Handoff | None = None
    booking: Booking | None = None
    # Stable codes of the reasons / exceptions (the certificate's renderings translate them).
    reason_codes: tuple[str, ...] = ()
    exception_codes: tuple[str, ...] = ()
