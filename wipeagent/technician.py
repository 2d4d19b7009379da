"""What a session can ask of the person at the bench, and of the bench's intake list.

A session never waits on a person directly: it asks a `Technician`, which knows how
the bench reaches people (the control API and bench page in the service, a simulated
technician in the demo) and bounds every wait itself. `NO_TECHNICIAN` answers nothing at
once: a bench without a control API never blocks on a person.

- `enter_imeis`: the phone would not give its IMEI; the technician scans or types it.
- `booking`: the intake entry (platform booking) that matches the phone, if any.
- `attest_final_reset`: under policy.handoff = "final_reset", the technician reset the
  phone from Settings a second time and says so (the agent cannot verify it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from wipeagent.identifiers import valid_imei
from wipeagent.models import Booking, DeviceIdentity

if TYPE_CHECKING:
    from wipeagent.session import DeviceSession

MAX_IMEIS = 4


@dataclass(frozen=True)
class EnteredImeis:
    """IMEIs the technician scanned or typed for one phone (validated: Luhn)."""

    imeis: tuple[str, ...]
    operator: str | None
    at: datetime

    def __post_init__(self) -> None:
        if len(self.imeis) > MAX_IMEIS or not all(valid_imei(i) for i in self.imeis):
            raise ValueError("entered IMEIs must be 0-4 valid IMEIs")


@dataclass(frozen=True)
class Attestation:
    """The technician's word that the final reset was done."""

    operator: str | None
    at: datetime


class Technician(Protocol):
    """The bench's people and intake list, as a session sees them."""

    async def enter_imeis(self, session: DeviceSession,
                          identity: DeviceIdentity) -> EnteredImeis | None:
        """Ask for the phone's IMEI(s); None when nobody answered in time."""
        ...

    async def booking(self, identity: DeviceIdentity) -> Booking | None:
        """The intake entry matching this phone's serial or one of its IMEIs."""
        ...

    async def attest_final_reset(self, session: DeviceSession,
                                 identity: DeviceIdentity) -> Attestation | None:
        """Wait for the technician to say the final reset is done; None: not in time."""
        ...


class _NoTechnician:
    """A bench without people to ask: every question is answered "no" at once."""

    async def enter_imeis(self, session: DeviceSession,
                          identity: DeviceIdentity) -> EnteredImeis | None:
        return None

    async def booking(self, identity: DeviceIdentity) -> Booking | None:
        return None

    async def attest_final_reset(self, session: DeviceSession,
                                 identity: DeviceIdentity) -> Attestation | None:
        return None


NO_TECHNICIAN: Technician = _NoTechnician()
