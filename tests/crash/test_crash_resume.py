"""kill -9 the agent at every step of a session, restart it, and check it finished right.

The phones outlive the agent (they run in the test process); the agent is a real
subprocess. After every crash and restart (`CrashBench.check_invariants`): every session
finished (resumed, superseded or ended), exactly one certificate per phone session, every
certificate verifies, the station chain is 1..n with no gap, fork or duplicate, an erase
that began before the crash is only "erased" when the restarted agent verified it, the
data is really gone from a phone certified erased, and no phone was erased twice.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from crash_bench import CrashBench

# Exact kill points: the agent SIGKILLs itself right after this commit.
EVERY_COMMIT = [
    "created",             # session row written, phone not yet identified
    "step:identify",
    "step:diagnose",
    "step:plan",
    "step:canary",
    "step:erase_started",  # journaled, the erase command not yet sent
    "step:returned",
    "step:verify",
    "step:outcome",
    "certificate",         # certificate + chain link committed, `certified` not journaled
    "step:certified",
]

async def crash_and_resume(bench: CrashBench, *crash_at: str) -> dict[str, str]:
    """Run the agent once per kill point (each killed there), then once to the end."""
    for point in crash_at:
        await bench.run_agent(crash_at=point)
    before = bench.journal()
    restarted_at = datetime.now(UTC)
    await bench.run_agent()
    return bench.check_invariants(restarted_at, before)


@pytest.mark.parametrize("crash_at", EVERY_COMMIT)
async def test_happy_path_kill9_after_every_commit(tmp_path: Path, crash_at: str) -> None:
    async with CrashBench(tmp_path, ["pixel8-clean"]) as bench:
        outcomes = await crash_and_resume(bench, crash_at)
        phone = bench.phone("pixel8-clean")
        if crash_at == "step:erase_started":
            # The agent died before it sent the reset: the phone still holds its data, and
            # the resumed session, which never sends an erase twice, must say so.
            assert outcomes == {"pixel8-clean": "not_erased"}
            assert phone.counters.factory_resets == 0
            assert phone.user_files()
        else:
            assert outcomes == {"pixel8-clean": "erased"}
            assert phone.counters.factory_resets == 1


@pytest.mark.parametrize("restart", ["while_rebooting", "after_it_is_back"])
async def test_kill9_mid_reboot(tmp_path: Path, restart: str) -> None:
    """The reset command went out and the phone is rebooting when the agent dies."""
    async with CrashBench(tmp_path, ["pixel8-clean"]) as bench:
        phone = bench.phone("pixel8-clean")
        run = await bench.start_agent()
        await bench.until("the phone goes down for its reset", lambda: not phone.online, run)
        run.send(signal.SIGKILL)
        assert await run.wait() == -signal.SIGKILL
        before = bench.journal()
        assert before.last_steps() == ["erase_started"]
        if restart == "after_it_is_back":
            await bench.until("the phone is back", lambda: phone.online
                              and phone.counters.factory_resets == 1)
        restarted_at = datetime.now(UTC)
        await bench.run_agent()
        outcomes = bench.check_invariants(restarted_at, before)
        assert phone.counters.factory_resets == 1
        assert outcomes == {"pixel8-clean": "erased"}


@pytest.mark.parametrize("crash_at", ["step:plan", "certificate"])
async def test_refused_phone_kill9(tmp_path: Path, crash_at: str) -> None:
    """A phone with a PIN is refused; a crash anywhere never turns that into an erase."""
    async with CrashBench(tmp_path, ["locked"]) as bench:
        outcomes = await crash_and_resume(bench, crash_at)
        assert outcomes == {"locked": "not_erased"}
        phone = bench.phone("locked")
        assert phone.counters.power_cycles == 0 and phone.user_files()
        (cert,) = bench.verified_certificates()
        assert "lock screen" in cert.payload["outcome"]["reasons"][0]


@pytest.mark.parametrize("crash_at", ["step:erase_started", "step:verify"])
async def test_manual_reset_kill9(tmp_path: Path, crash_at: str) -> None:
    """Android 9: the technician resets the phone by hand when the agent asks."""
    async with CrashBench(tmp_path, ["android9"]) as bench:
        outcomes = await crash_and_resume(bench, crash_at)
        assert outcomes == {"android9": "erased_with_exceptions"}


async def test_manual_reset_kill9_while_the_technician_resets(tmp_path: Path) -> None:
    """The agent dies while it waits for the technician, who carries on regardless."""
    async with CrashBench(tmp_path, ["android9"]) as bench:
        phone = bench.phone("android9")
        run = await bench.start_agent()
        await bench.until("the agent asks for the manual reset",
                          lambda: phone.serial in bench.technician.reset, run)
        run.send(signal.SIGKILL)
        assert await run.wait() == -signal.SIGKILL
        before = bench.journal()
        assert before.last_steps() == ["erase_started"]
        restarted_at = datetime.now(UTC)
        await bench.run_agent()
        assert bench.check_invariants(restarted_at, before) == {
            "android9": "erased_with_exceptions"}
        assert phone.counters.factory_resets == 1


async def test_kill9_twice_including_during_the_resume(tmp_path: Path) -> None:
    """Killed after planting the canary, then again right after the resume began."""
    async with CrashBench(tmp_path, ["pixel8-clean"]) as bench:
        outcomes = await crash_and_resume(bench, "step:canary", "step:superseded")
        assert outcomes == {"pixel8-clean": "erased"}
        journal = bench.journal()
        assert sum(s.outcome == "superseded" for s in journal.sessions) == 2


async def test_two_phones_chain_survives_a_crash_between_certificates(tmp_path: Path) -> None:
    """Killed right after the first certificate of two: the second still links to it."""
    async with CrashBench(tmp_path, ["pixel8-clean", "locked"]) as bench:
        outcomes = await crash_and_resume(bench, "certificate")
        assert outcomes == {"pixel8-clean": "erased", "locked": "not_erased"}
        assert [c["sequence"] for c in bench.journal().certificates] == [1, 2]


@pytest.mark.parametrize("stop_at", ["canary", "mid_reboot"])
async def test_sigterm_pauses_and_restart_resumes(tmp_path: Path, stop_at: str) -> None:
    """A graceful stop (systemd stop) mid-session: exit 0, then the session resumes."""
    async with CrashBench(tmp_path, ["pixel8-clean"]) as bench:
        phone = bench.phone("pixel8-clean")
        run = await bench.start_agent()
        if stop_at == "canary":
            await bench.until("the canary is planted",
                              lambda: bench.journal().has_step("canary"), run)
        else:
            await bench.until("the phone goes down for its reset",
                              lambda: not phone.online, run)
        run.send(signal.SIGTERM)
        assert await run.wait() == 0, run.tail()
        before = bench.journal()
        (session,) = before.sessions
        assert session.state != "done"
        restarted_at = datetime.now(UTC)
        await bench.run_agent()
        assert bench.check_invariants(restarted_at, before) == {"pixel8-clean": "erased"}
        assert phone.counters.factory_resets == 1


@pytest.mark.parametrize("stop", ["term-during:step:erase_started",
                                  "term:step:erase_started"])
async def test_sigterm_at_erase_started_still_sends_the_erase(tmp_path: Path,
                                                             stop: str) -> None:
    """A graceful stop that lands while `erase_started` is being journaled, or right
    after, must not separate the journal entry from the erase command: the command is
    sent, the phone resets, and the restarted agent verifies it (instead of waiting out
    the reboot timeout for a reset that was never asked for and certifying not_erased)."""
    async with CrashBench(tmp_path, ["pixel8-clean"]) as bench:
        outcomes = await crash_and_resume(bench, stop)
        assert outcomes == {"pixel8-clean": "erased"}
        assert bench.phone("pixel8-clean").counters.factory_resets == 1


async def test_a_different_phone_back_after_a_restart_ends_the_old_session(
        tmp_path: Path) -> None:
    """Killed while the phone reboots for its reset; a phone with another serial answers
    on the slot afterwards (liar-other-phone). The old session, whose erase started, gets
    its certificate (not erased: identity_mismatch) instead of staying open for ever."""
    async with CrashBench(tmp_path, ["liar-other-phone"]) as bench:
        phone = bench.phone("liar-other-phone")
        run = await bench.start_agent()
        await bench.until("the phone goes down for its reset", lambda: not phone.online, run)
        run.send(signal.SIGKILL)
        assert await run.wait() == -signal.SIGKILL
        await bench.run_agent()
        journal = bench.journal()
        assert all(s.state == "done" for s in journal.sessions), journal.sessions
        old = [s for s in journal.sessions if s.serial == "38211FDH2026OP"
               and "erase_started" in journal.step_names(s.id)]
        assert len(old) == 1
        assert old[0].outcome == "not_erased"
        (cert,) = [c for c in journal.certificates if c["session_id"] == old[0].id]
        assert cert["outcome"] == "not_erased"
        steps = journal.steps[old[0].id]
        outcome = next(s for s in steps if s.step == "outcome")
        assert outcome.data["codes"] == ["identity_mismatch"], outcome.data


async def test_a_phone_that_never_comes_back_after_a_restart_gets_its_certificate(
        tmp_path: Path) -> None:
    """Stopped while the phone is away for its reset; the phone never comes back, so no
    session runs for it after the restart. Once the plan's return timeout has passed (from
    the erase's start, journaled), the agent certifies that session not erased."""
    async with CrashBench(tmp_path, ["liar-never-returns"]) as bench:
        phone = bench.phone("liar-never-returns")
        run = await bench.start_agent()
        await bench.until("the phone goes down for its reset", lambda: not phone.online, run)
        run.send(signal.SIGTERM)
        assert await run.wait() == 0
        assert bench.journal().last_steps() == ["paused"]
        await bench.run_agent()  # --once: ends when that session has its certificate
        journal = bench.journal()
        (session,) = journal.sessions
        assert session.state == "done" and session.outcome == "not_erased"
        assert journal.step_names(session.id).count("erase_started") == 1
        (cert,) = journal.certificates
        assert cert["session_id"] == session.id and cert["outcome"] == "not_erased"
        outcome = next(s for s in journal.steps[session.id] if s.step == "outcome")
        assert outcome.data["codes"] == ["device_timeout"], outcome.data
        assert "did not come back" in outcome.data["reasons"][0]
