"""The contract between a DeviceSession and a platform driver.

A session drives the workflow and journals every result; a driver knows what to ask one
kind of phone and what the answers mean. Drivers talk to the phone only through a
transport connection they are given, and raise only `wipeagent.errors` types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from wipeagent.models import (
    Canary,
    CheckResult,
    DeviceIdentity,
    ErasePlan,
    HandoffItem,
    Platform,
    Refusal,
)


@dataclass(frozen=True)
class ErasePolicy:
    """What the bench allows before an erase (from config)."""

    # A Google account on an Android phone means Factory Reset Protection after the reset:
    # the phone becomes unsellable, so by default the agent refuses to erase it.
    refuse_with_accounts: bool = True
    # R2v3 Appendix B: a guided, recorded manual reset only where no software method exists.
    allow_manual_reset: bool = True
    # Refuse phones that are rooted / have an unlocked bootloader instead of erasing them
    # with an exception noted.
    refuse_rooted: bool = False


class PlatformDriver(Protocol):
    """One phone, one driver instance. All methods may raise DeviceError subclasses."""

    platform: Platform

    async def connect(self) -> None:
        """Reach the phone (and authenticate). DeviceGone / DeviceTimeout when nothing
        answers, NotAuthorised while the phone has not accepted this bench. Idempotent."""
        ...

    async def identify(self) -> DeviceIdentity:
        """Read and validate who the phone is."""
        ...

    async def diagnose(self, identity: DeviceIdentity) -> list[CheckResult]:
        """Battery, storage, locks, root, bootloader ... each a check with evidence."""
        ...

    def plan_erase(
        self,
        identity: DeviceIdentity,
        diagnostics: list[CheckResult],
        policy: ErasePolicy,
    ) -> tuple[list[CheckResult], ErasePlan | Refusal]:
        """Pure: the precondition checks, and either a plan or a precise refusal."""
        ...

    async def plant_canary(self) -> Canary:
        """Plant random markers that a real erase removes."""
        ...

    async def start_erase(self, plan: ErasePlan) -> None:
        """Start the erase. Returns once the phone accepted it (it may then drop off)."""
        ...

    async def await_return(self, expected: DeviceIdentity, plan: ErasePlan) -> DeviceIdentity:
        """Wait (bounded by plan.return_timeout_s) for the phone to come back, reconnect,
        and check its identity before anything else (IdentityMismatch otherwise)."""
        ...

    async def verify(
        self, identity: DeviceIdentity, plan: ErasePlan, canary: Canary
    ) -> list[CheckResult]:
        """Checks on the phone after the erase: verification and validation."""
        ...

    # -- hand-off (after a verified erase; see docs/handoff.md) ------------------------

    async def hand_off(self, plan: ErasePlan) -> list[HandoffItem]:
        """Put back what the erase method changed and read every value back (Android:
        Test Harness Mode's settings; iOS: forget this bench's pairing, read the state),
        everything except the last step. Items that cannot be put back are listed as
        such. DeviceError when the phone stops answering."""
        ...

    async def finish_hand_off(self) -> HandoffItem | None:
        """The last step, after which the bench cannot reach the phone (Android: USB
        debugging off, confirmed by the phone no longer answering); None when there is
        none (iOS)."""
        ...

    async def reachable_with_bench_key(self, within_s: float) -> bool:
        """Does the phone still answer this bench's key (within `within_s` bench s)?"""
        ...

    async def wait_until_gone(self, timeout_s: float) -> bool:
        """Wait until the phone stops answering (a reset started); False on timeout."""
        ...

    async def close(self) -> None:
        """Release the connection. Never raises."""
        ...


@runtime_checkable
class PresenceWatch(Protocol):
    """A driver that can tell, through its own connection, whether its phone is still
    there (sources without hotplug events watch a phone in a session this way)."""

    async def answers(self) -> bool | None:
        """True: it answers; False: one failed check (evidence, not proof); None: no
        verdict now."""
        ...
