"""DeviceSession's journaling and outcome rules, with a scripted driver.

The driver here is a stand-in for the platform layer (our own interface), so these tests
can force every failure at every step; the real Android driver against the simulator is
tested end to end elsewhere.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from wipeagent.clock import Clock
from wipeagent.errors import DeviceGone, DeviceTimeout
from wipeagent.models import (
    Canary,
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    ErasePlan,
    HandoffItem,
    HandoffResult,
    NistCategory,
    Outcome,
    Platform,
    Refusal,
    SessionRecord,
    StationInfo,
)
from wipeagent.platforms.base import ErasePolicy
from wipeagent.session import (
    NOT_CONFIRMED,
    DeviceSession,
    GateRequest,
    GateVerdict,
    SessionEvent,
)
from wipeagent.steps import JournalStep, SessionStep
from wipeagent.store import CertificateRow, ChainHead, NewCertificate, Store

IDENTITY = DeviceIdentity(platform=Platform.ANDROID, manufacturer="Google", model="Pixel 8",
                          serial="SER123", os_name="Android", os_version="14",
                          hardware_ids={"boot_serial": "SER123"})
PLAN = ErasePlan(method_id="android.testharness", method="cmd testharness enable",
                 technique="cryptographic erase via factory reset", category=NistCategory.PURGE)


def ok(id_: str, kind: CheckKind = CheckKind.VALIDATION) -> CheckResult:
    return CheckResult(id=id_, title=id_, kind=kind, status=CheckStatus.PASS, method="t")


class ScriptedDriver:
    platform = Platform.ANDROID

    def __init__(self, **faults: BaseException) -> None:
        self.faults = faults
        self.calls: list[str] = []
        self.plan: ErasePlan | Refusal = PLAN
        self.returned = IDENTITY
        self.verification = [ok("canary_gone"), ok("encryption", CheckKind.VERIFICATION)]
        self.last = HandoffItem(id="usb_debugging", title="USB debugging",
                                result=HandoffResult.RESTORED, before="1", after="0")
        self.still_reachable = False

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.faults:
            raise self.faults[name]

    async def connect(self) -> None:
        self._step("connect")

    async def identify(self) -> DeviceIdentity:
        self._step("identify")
        return IDENTITY

    async def diagnose(self, identity: DeviceIdentity) -> list[CheckResult]:
        self._step("diagnose")
        return [ok("battery", CheckKind.DIAGNOSTIC)]

    def plan_erase(self, identity, diagnostics, policy):  # type: ignore[no-untyped-def]
        self._step("plan")
        return [ok("lock_screen", CheckKind.PRECONDITION)], self.plan

    async def plant_canary(self) -> Canary:
        self._step("canary")
        return Canary(files=("/sdcard/x",), token="tok")

    async def start_erase(self, plan: ErasePlan) -> None:
        self._step("erase")

    async def await_return(self, expected: DeviceIdentity, plan: ErasePlan) -> DeviceIdentity:
        self._step("await_return")
        return self.returned

    async def verify(self, identity, plan, canary) -> list[CheckResult]:  # type: ignore[no-untyped-def]
        self._step("verify")
        return self.verification

    async def hand_off(self, plan: ErasePlan) -> list[HandoffItem]:
        self._step("hand_off")
        return [HandoffItem(id="stay_awake", title="Screen stays on while charging",
                            result=HandoffResult.RESTORED, before="15", after="0")]

    async def finish_hand_off(self) -> HandoffItem | None:
        self._step("finish_hand_off")
        return self.last

    async def reachable_with_bench_key(self, within_s: float) -> bool:
        self._step("probe")
        return self.still_reachable

    async def wait_until_gone(self, timeout_s: float) -> bool:
        self._step("gone")
        return True

    async def close(self) -> None:
        self.calls.append("close")


class CountingCertifier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.issued: list[SessionRecord] = []

    async def certify(self, record: SessionRecord) -> CertificateRow:
        def issue(head: ChainHead) -> NewCertificate:
            self.issued.append(record)
            return NewCertificate(f"cert-{len(self.issued)}", f"h{len(self.issued)}",
                                  record.outcome.value, record.model_dump_json().encode())

        return await self.store.append_certificate(record.session_id, "st", issue)


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with Store(tmp_path / "j.sqlite3") as s:
        yield s


def make(driver: ScriptedDriver, store: Store) -> tuple[DeviceSession, CountingCertifier]:
    certifier = CountingCertifier(store)
    session = DeviceSession(slot="slot-1", driver=driver, store=store, certifier=certifier,
                            station=StationInfo(station_id="st"), policy=ErasePolicy(),
                            clock=Clock(1000))
    return session, certifier


async def test_happy_path_journals_every_step(store: Store) -> None:
    driver = ScriptedDriver()
    session, certifier = make(driver, store)
    result = await session.run()
    assert result.outcome is Outcome.ERASED
    assert result.certificate is not None and result.certificate.sequence == 1
    steps = [s.step for s in await store.steps(session.session_id)]
    assert steps == ["identify", "diagnose", "plan", "canary", "erase_started", "returned",
                     "verify", "handoff_started", "handoff_last", "handoff", "outcome",
                     "certified"]
    assert driver.calls[-1] == "close"
    assert certifier.issued[0].category is NistCategory.PURGE


async def test_refusal_never_erases(store: Store) -> None:
    driver = ScriptedDriver()
    driver.plan = Refusal(code="lock_screen", message="a screen lock is set",
                          hint="remove the screen lock")
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.NOT_ERASED
    assert "erase" not in driver.calls and "canary" not in driver.calls
    assert "remove the screen lock" in result.reasons[0]
    assert result.codes == ("lock_screen",)


async def test_phone_not_returning_after_erase_is_not_erased(store: Store) -> None:
    driver = ScriptedDriver(await_return=DeviceTimeout("the phone did not come back"))
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.NOT_ERASED
    assert "could not be verified" in result.reasons[0]
    assert result.codes == ("device_timeout",)
    assert result.certificate is not None  # an honest "not erased" certificate


async def test_other_phone_returning_is_not_erased(store: Store) -> None:
    driver = ScriptedDriver()
    driver.returned = IDENTITY.model_copy(update={"hardware_ids": {"boot_serial": "OTHER"}})
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.NOT_ERASED
    assert "boot_serial" in result.reasons[0]
    assert result.codes == ("identity_mismatch",)
    assert "verify" not in driver.calls


async def test_disconnect_during_verify_is_not_erased(store: Store) -> None:
    driver = ScriptedDriver(verify=DeviceGone("connection reset"))
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.NOT_ERASED
    assert "connection reset" in result.reasons[0]


async def test_bad_data_from_platform_ends_session_cleanly(store: Store) -> None:
    driver = ScriptedDriver()
    driver.verification = []
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.NOT_ERASED


async def test_failure_before_identify_leaves_no_certificate(store: Store) -> None:
    driver = ScriptedDriver(identify=DeviceGone("unplugged"))
    session, certifier = make(driver, store)
    result = await session.run()
    assert result.outcome is Outcome.NOT_ERASED and result.certificate is None
    assert certifier.issued == []
    row = await store.session(session.session_id)
    assert row is not None and row.state == "done"


async def test_crash_after_erase_started_resumes_and_verifies(store: Store) -> None:
    # The agent dies (task cancelled) while waiting for the phone to come back.
    first = ScriptedDriver(await_return=asyncio.CancelledError())
    session1, _ = make(first, store)
    with pytest.raises(asyncio.CancelledError):
        await session1.run()
    assert (await store.session(session1.session_id)).state == "erase_started"  # type: ignore[union-attr]

    # The agent restarts; the same phone is back.
    second = ScriptedDriver()
    session2, certifier = make(second, store)
    result = await session2.run()
    assert result.outcome is Outcome.ERASED
    assert result.session_id == session1.session_id
    # Never erased twice, never planted twice: resumed straight into the return/verify.
    assert "erase" not in second.calls and "canary" not in second.calls
    assert "verify" in second.calls
    assert len(certifier.issued) == 1


async def test_crash_before_certify_issues_exactly_one_certificate(store: Store) -> None:
    class FailingCertifier(CountingCertifier):
        async def certify(self, record: SessionRecord) -> CertificateRow:
            raise asyncio.CancelledError

    driver = ScriptedDriver()
    session = DeviceSession(slot="s", driver=driver, store=store,
                            certifier=FailingCertifier(store),
                            station=StationInfo(station_id="st"), policy=ErasePolicy(),
                            clock=Clock(1000))
    with pytest.raises(asyncio.CancelledError):
        await session.run()
    second = ScriptedDriver()
    session2, certifier = make(second, store)
    result = await session2.run()
    assert result.outcome is Outcome.ERASED
    # The outcome was journaled before the crash: nothing is asked of the phone again.
    assert "erase" not in second.calls and "verify" not in second.calls
    assert len(certifier.issued) == 1
    assert len(await store.certificates()) == 1


async def test_certified_phone_present_at_start_is_not_processed_again(store: Store) -> None:
    first, certifier = make(ScriptedDriver(), store)
    assert (await first.run()).outcome is Outcome.ERASED
    # The agent restarts with the phone still plugged in: nothing is asked of it.
    again = ScriptedDriver()
    session = DeviceSession(slot="slot-1", driver=again, store=store, certifier=certifier,
                            station=StationInfo(station_id="st"), policy=ErasePolicy(),
                            clock=Clock(1000), present_at_start=True)
    result = await session.run()
    assert result.codes == ("already_certified",)
    assert result.certificate is not None
    assert result.certificate.session_id == first.session_id
    assert "erase" not in again.calls and "diagnose" not in again.calls
    assert len(await store.certificates()) == 1


async def test_certified_phone_replugged_is_processed_again(store: Store) -> None:
    first, _ = make(ScriptedDriver(), store)
    await first.run()
    replugged = ScriptedDriver()
    second, _ = make(replugged, store)  # arrived after the agent started
    result = await second.run()
    assert result.outcome is Outcome.ERASED
    assert "erase" in replugged.calls
    assert len(await store.certificates()) == 2


async def test_gate_refusal_carries_its_own_code(store: Store) -> None:
    async def intake(_request: GateRequest) -> GateVerdict:
        return GateVerdict(False, refusal=Refusal(code="not_booked_in", message="not booked in",
                                                  hint="book the phone in on the platform"))

    driver = ScriptedDriver()
    session = DeviceSession(slot="s", driver=driver, store=store,
                            certifier=CountingCertifier(store),
                            station=StationInfo(station_id="st"), policy=ErasePolicy(),
                            clock=Clock(1000), gate=intake)
    result = await session.run()
    assert result.codes == ("not_booked_in",)
    assert "erase" not in driver.calls and "canary" not in driver.calls


async def test_resume_after_erase_started_does_not_ask_the_gate_again(store: Store) -> None:
    asked: list[str] = []

    async def confirm(request: GateRequest) -> GateVerdict:
        asked.append(request.session_id)
        return GateVerdict(True, operator="alice", record_step=JournalStep.CONFIRMED,
                           record={"serial": request.identity.serial})

    def with_gate(driver: ScriptedDriver) -> DeviceSession:
        return DeviceSession(slot="s", driver=driver, store=store,
                             certifier=CountingCertifier(store),
                             station=StationInfo(station_id="st"), policy=ErasePolicy(),
                             clock=Clock(1000), gate=confirm)

    with pytest.raises(asyncio.CancelledError):
        await with_gate(ScriptedDriver(await_return=asyncio.CancelledError())).run()
    resumed = with_gate(ScriptedDriver())
    result = await resumed.run()
    assert result.outcome is Outcome.ERASED
    assert len(asked) == 1  # confirmed once, before the erase
    assert result.record is not None and result.record.operator == "alice"
    steps = [(r.step, r.data) for r in await store.steps(result.session_id)]
    # The session journaled the gate's record, with the operator, before the erase.
    confirmed = [i for i, (step, _d) in enumerate(steps) if step == JournalStep.CONFIRMED]
    started = [i for i, (step, _d) in enumerate(steps) if step == JournalStep.ERASE_STARTED]
    assert len(confirmed) == 1 and confirmed[0] < started[0]
    assert steps[confirmed[0]][1] == {"serial": IDENTITY.serial, "operator": "alice"}


async def test_a_gate_tells_the_bench_through_the_session(store: Store) -> None:
    events: list[SessionEvent] = []

    async def gate(request: GateRequest) -> GateVerdict:
        request.emit(SessionStep.CONFIRM, "waiting for you", instructions=("confirm it",))
        return NOT_CONFIRMED

    session = DeviceSession(slot="s", driver=ScriptedDriver(), store=store,
                            certifier=CountingCertifier(store),
                            station=StationInfo(station_id="st"), policy=ErasePolicy(),
                            clock=Clock(1000), gate=gate, observer=events.append)
    result = await session.run()
    assert result.codes == ("not_confirmed",)
    (asked,) = [e for e in events if e.step == SessionStep.CONFIRM]
    assert (asked.slot, asked.session_id, asked.instructions) == (
        "s", session.session_id, ("confirm it",))
    assert JournalStep.CONFIRMED not in [r.step for r in await store.steps(session.session_id)]


def test_a_gate_may_only_journal_what_allowed_the_erase() -> None:
    with pytest.raises(ValueError, match="cannot journal"):
        GateVerdict(True, record_step=JournalStep.OUTCOME)


async def test_answer_lost_while_starting_the_erase_is_verified_not_assumed(
        store: Store) -> None:
    # The phone accepted the erase and rebooted before its answer reached the agent.
    driver = ScriptedDriver(erase=DeviceGone("connection reset"))
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.ERASED  # the verification on the returned phone says so
    assert driver.calls.index("await_return") < driver.calls.index("verify")


async def test_erase_never_reaching_the_phone_fails_verification(store: Store) -> None:
    driver = ScriptedDriver(erase=DeviceTimeout("no answer"))
    driver.verification = [
        CheckResult(id="canary_gone", title="Canary files gone", kind=CheckKind.VALIDATION,
                    status=CheckStatus.FAIL, method="t", detail="still present"),
        ok("reset_state", CheckKind.VERIFICATION),
    ]
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.NOT_ERASED
    assert result.codes == ("validation_failed",)
