"""The hand-off step of a session, IMEIs from the technician and the intake booking, with
the scripted driver of test_session (the platform layer is tested against the simulator
in tests/platforms and end to end in tests/test_bench_handoff_e2e.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from test_session import IDENTITY, CountingCertifier, ScriptedDriver, make, store  # noqa: F401

from wipeagent.clock import Clock
from wipeagent.daemon import Agent, AgentSettings
from wipeagent.errors import DeviceGone
from wipeagent.models import (
    Booking,
    DeviceIdentity,
    HandoffItem,
    HandoffPolicy,
    HandoffResult,
    HandoffStatus,
    IdentifierSource,
    Outcome,
    Refusal,
    StationInfo,
)
from wipeagent.outcome import HANDOFF_FAILED_CODE
from wipeagent.platforms.base import ErasePolicy
from wipeagent.session import DeviceSession
from wipeagent.store import Store
from wipeagent.technician import Attestation, EnteredImeis

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class BenchPeople:
    """A Technician whose answers each test chooses."""

    def __init__(self, *, imeis: tuple[str, ...] | None = None,
                 booking: Booking | None = None, attests: bool = False) -> None:
        self.imeis = imeis
        self.booking_ = booking
        self.attests = attests
        self.asked: list[str] = []
        self.on_attest: list[ScriptedDriver] = []

    async def enter_imeis(self, session: DeviceSession,
                          identity: DeviceIdentity) -> EnteredImeis | None:
        self.asked.append("imei")
        return EnteredImeis(self.imeis, "alice", NOW) if self.imeis is not None else None

    async def booking(self, identity: DeviceIdentity) -> Booking | None:
        self.asked.append(f"booking:{','.join(identity.imeis)}")
        return self.booking_

    async def attest_final_reset(self, session: DeviceSession,
                                 identity: DeviceIdentity) -> Attestation | None:
        self.asked.append("final_reset")
        for driver in self.on_attest:
            driver.still_reachable = False  # the phone really was reset
        return Attestation("bob", NOW) if self.attests else None


def session_with(driver: ScriptedDriver, store: Store, people: BenchPeople,  # noqa: F811
                 policy: HandoffPolicy = HandoffPolicy.RESTORE
                 ) -> tuple[DeviceSession, CountingCertifier]:
    certifier = CountingCertifier(store)
    return DeviceSession(slot="slot-1", driver=driver, store=store, certifier=certifier,
                         station=StationInfo(station_id="st"), policy=ErasePolicy(),
                         clock=Clock(1000), technician=people,
                         handoff_policy=policy), certifier


async def test_completed_handoff_keeps_erased_and_reaches_the_record(
        store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver()
    session, certifier = make(driver, store)
    result = await session.run()
    assert result.outcome is Outcome.ERASED and result.exceptions == ()
    record = certifier.issued[0]
    assert record.handoff is not None and record.handoff.status is HandoffStatus.COMPLETED
    assert [i.id for i in record.handoff.items] == ["stay_awake", "usb_debugging"]
    # The last step comes after the journal entry that holds every reading.
    assert driver.calls.index("hand_off") < driver.calls.index("finish_hand_off")
    steps = [s.step for s in await store.steps(session.session_id)]
    assert steps.index("handoff_last") < steps.index("handoff") < steps.index("outcome")


async def test_failed_handoff_is_an_exception_not_silence(store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver()
    driver.last = HandoffItem(id="usb_debugging", title="USB debugging",
                              result=HandoffResult.FAILED, before="1",
                              detail="the phone still answers ADB with this bench's key")
    result = await make(driver, store)[0].run()
    assert result.outcome is Outcome.ERASED_WITH_EXCEPTIONS
    assert HANDOFF_FAILED_CODE in result.codes
    assert any(e.startswith("hand-off failed") and "still answers ADB" in e
               for e in result.exceptions)
    assert result.record is not None and result.record.category is not None  # still Purge


async def test_phone_gone_during_handoff_fails_it_but_keeps_the_certificate(
        store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver(hand_off=DeviceGone("unplugged"))
    session, certifier = make(driver, store)
    assert session.expects_departure is False
    result = await session.run()
    assert result.outcome is Outcome.ERASED_WITH_EXCEPTIONS
    handoff = certifier.issued[0].handoff
    assert handoff is not None and handoff.status is HandoffStatus.FAILED
    assert "unplugged" in handoff.items[-1].detail


async def test_not_erased_phone_gets_no_handoff(store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver()
    driver.plan = Refusal(code="lock_screen", message="locked", hint="unlock it")
    session, certifier = make(driver, store)
    await session.run()
    assert "hand_off" not in driver.calls and certifier.issued[0].handoff is None


async def test_final_reset_attested_and_confirmed_by_the_phone_going_quiet(
        store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver()
    driver.still_reachable = True
    people = BenchPeople(attests=True)
    people.on_attest.append(driver)
    session, certifier = session_with(driver, store, people, HandoffPolicy.FINAL_RESET)
    result = await session.run()
    assert result.outcome is Outcome.ERASED
    handoff = certifier.issued[0].handoff
    assert handoff is not None and handoff.policy is HandoffPolicy.FINAL_RESET
    assert [i.result for i in handoff.items] == [HandoffResult.ATTESTED]
    assert handoff.attested_by == "bob" and "not verified" in handoff.items[0].detail
    assert "hand_off" not in driver.calls  # nothing to put back after a real reset


async def test_final_reset_not_confirmed_falls_back_to_restore(store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver()
    driver.still_reachable = True  # nobody reset it
    session, certifier = session_with(driver, store, BenchPeople(attests=False),
                                      HandoffPolicy.FINAL_RESET)
    result = await session.run()
    assert result.outcome is Outcome.ERASED_WITH_EXCEPTIONS
    handoff = certifier.issued[0].handoff
    assert handoff is not None and handoff.status is HandoffStatus.FAILED
    assert [i.id for i in handoff.items] == ["final_reset", "stay_awake", "usb_debugging"]
    assert handoff.items[0].result is HandoffResult.FAILED


async def test_attestation_the_phone_contradicts_is_not_believed(store: Store) -> None:  # noqa: F811
    driver = ScriptedDriver()
    driver.still_reachable = True
    session, certifier = session_with(driver, store, BenchPeople(attests=True),
                                      HandoffPolicy.FINAL_RESET)
    await session.run()
    handoff = certifier.issued[0].handoff
    assert handoff is not None and handoff.items[0].result is HandoffResult.FAILED
    assert "no reset took place" in handoff.items[0].detail


async def test_technician_imeis_and_booking_reach_the_record(store: Store) -> None:  # noqa: F811
    booking = Booking(reference="TI-7", matched_by="imei", identifier="355987314255166")
    people = BenchPeople(imeis=("355987314255166",), booking=booking)
    session, certifier = session_with(ScriptedDriver(), store, people)
    await session.run()
    record = certifier.issued[0]
    assert record.identity is not None and record.identity.imeis == ("355987314255166",)
    assert record.identity.imei_source is IdentifierSource.TECHNICIAN
    assert record.booking == booking
    # The booking was looked up with the IMEI the technician entered.
    assert people.asked[:2] == ["imei", "booking:355987314255166"]
    steps = [s.step for s in await store.steps(session.session_id)]
    assert steps.index("imei_entered") < steps.index("booked_in") < steps.index("diagnose")


async def test_phone_with_imei_is_not_asked_for_one(store: Store) -> None:  # noqa: F811
    class WithImei(ScriptedDriver):
        async def identify(self) -> DeviceIdentity:
            self._step("identify")
            return IDENTITY.model_copy(update={"imeis": ("351349110248735",),
                                               "imei_source": IdentifierSource.PHONE})

    people = BenchPeople(imeis=("355987314255166",))
    session, certifier = session_with(WithImei(), store, people)
    await session.run()
    assert "imei" not in people.asked
    assert certifier.issued[0].identity.imeis == ("351349110248735",)  # type: ignore[union-attr]


async def test_unreachable_phone_after_usb_debugging_off_still_gets_its_certificate(
        store: Store) -> None:  # noqa: F811
    # The agent dies right after journaling the readings, as USB debugging goes off.
    class DiesOnLastStep(ScriptedDriver):
        async def finish_hand_off(self) -> HandoffItem | None:
            raise asyncio.CancelledError

    session, _ = make(DiesOnLastStep(), store)
    with pytest.raises(asyncio.CancelledError):
        await session.run()
    assert (await store.session(session.session_id)).state == "handoff_last"  # type: ignore[union-attr]
    # The agent starts again; the phone never comes back (its ADB is off).
    certifier = CountingCertifier(store)
    agent = Agent(sources=[], store=store, certifier=certifier,
                  settings=AgentSettings(station=StationInfo(station_id="st"),
                                         policy=ErasePolicy()), clock=Clock(1000))
    await agent.finish_unreachable()
    assert agent.completed == 1 and len(certifier.issued) == 1
    record = certifier.issued[0]
    assert record.outcome is Outcome.ERASED_WITH_EXCEPTIONS
    assert record.handoff is not None
    assert [i.id for i in record.handoff.items] == ["stay_awake", "usb_debugging"]
    assert "agent stopped" in record.handoff.items[-1].detail
    assert (await store.session(session.session_id)).state == "done"  # type: ignore[union-attr]
    # Nothing left to finish.
    await agent.finish_unreachable()
    assert len(certifier.issued) == 1


@pytest.mark.parametrize("answers", [False, True])
async def test_restart_asks_the_phone_it_can_still_reach(store: Store,  # noqa: F811
                                                         answers: bool) -> None:
    """A TCP phone can be asked after a restart: one that no longer answers this bench's
    key has USB debugging off (the last step's own evidence); one that still answers
    takes the last step now."""
    class DiesOnLastStep(ScriptedDriver):
        async def finish_hand_off(self) -> HandoffItem | None:
            raise asyncio.CancelledError

    session, _ = make(DiesOnLastStep(), store)
    with pytest.raises(asyncio.CancelledError):
        await session.run()
    probe = ScriptedDriver()
    probe.still_reachable = answers
    certifier = CountingCertifier(store)
    agent = Agent(sources=[], store=store, certifier=certifier,
                  settings=AgentSettings(station=StationInfo(station_id="st"),
                                         policy=ErasePolicy()), clock=Clock(1000),
                  driver_for_slot=lambda slot: probe if slot == "slot-1" else None)
    await agent.finish_unreachable()
    record = certifier.issued[0]
    assert record.outcome is Outcome.ERASED
    assert record.handoff is not None and record.handoff.status is HandoffStatus.COMPLETED
    assert ("finish_hand_off" in probe.calls) is answers
    assert probe.calls[-1] == "close"
