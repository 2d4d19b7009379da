"""iPhones and agent restarts: the real `wipeagent run` stopped (SIGTERM, kill -9) while
an iPhone erases, reboots or comes back, then started again. The session must end with
the outcome the phone's true state allows, and its checks must test the pairing and the
identity recorded *before* the erase, never a pairing made after it.

The phones are simulated iPhones behind the simulator's usbmuxd in the test process (they
outlive every agent); the agent is the real process (tests/crash/agent_killpoint.py).
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from crash_bench import CrashBench, Journal

from wipeagent.certs.verify import VerifiedCertificate


def certificate_of(bench: CrashBench, serial: str) -> tuple[VerifiedCertificate, list[str]]:
    journal = bench.journal()
    sessions = [s for s in journal.sessions if s.serial == serial and s.outcome not in
                ("superseded", "already_certified", None)]
    assert len(sessions) == 1, [(s, journal.step_names(s.id)) for s in journal.sessions]
    (session,) = sessions
    (row,) = [c for c in journal.certificates if c["session_id"] == session.id]
    (cert,) = [v for v in bench.verified_certificates()
               if v.certificate_id == row["certificate_id"]]
    return cert, journal.step_names(session.id)


def checks_of(cert: VerifiedCertificate) -> dict[str, str]:
    return {c["id"]: c["status"] for c in cert.payload["verification"]["checks"]}


async def stop_and_restart(bench: CrashBench, sig: signal.Signals,
                           when: str) -> tuple[VerifiedCertificate, list[str], Journal]:
    (phone,) = bench.iphones
    run = await bench.start_agent(once=False)
    if when == "rebooting":
        # ~110 s into the erase: erased, still off, rebooting.
        await bench.until("the phone erased and rebooting",
                          lambda: phone.erase_count == 1 and not phone.visible, run)
    elif when == "erasing":
        await bench.until("the phone gone for its erase",
                          lambda: phone.busy and not phone.visible and phone.erase_count == 0,
                          run)
    elif when == "back":
        await bench.until("the phone back from its erase",
                          lambda: phone.erase_count == 1 and phone.visible, run)
    run.send(sig)
    rc = await run.wait()
    assert rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL), run.tail()
    before = bench.journal()
    assert phone.erase_count <= 1
    restarted_at = datetime.now(UTC)
    await bench.run_until_certified({phone.serial_number})
    cert, steps = certificate_of(bench, phone.serial_number)
    assert steps.count("erase_started") == 1, steps  # never sent twice
    if cert.outcome != "not_erased":
        # Only a verification made after the restart may vouch for the erase.
        journal = bench.journal()
        session = next(s for s in journal.sessions if s.serial == phone.serial_number
                   and s.outcome not in ("superseded", "already_certified"))
        verify = next(s for s in journal.steps[session.id] if s.step == "verify")
        assert verify.at > restarted_at
    return cert, steps, before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill9"])
async def test_restart_while_the_iphone_reboots_after_its_erase(tmp_path: Path,
                                                                sig: signal.Signals) -> None:
    """The reported case: stopped ~110 s into an erase, restarted before the phone is
    back. The phone was erased: the certificate says erased, and the pre-erase pairing
    check passes (the old pairing is what was tested, not one made after the erase)."""
    async with CrashBench(tmp_path, [], ios_profiles=["clean"]) as bench:
        (phone,) = bench.iphones
        cert, _steps, before = await stop_and_restart(bench, sig, "rebooting")
        assert phone.erase_count == 1
        assert cert.outcome == "erased", cert.payload["verification"]
        checks = checks_of(cert)
        assert checks["ios.verify.old_pairing"] == "pass", checks
        assert checks["ios.verify.identity_key"] == "pass", checks
        assert cert.payload["verification"]["data_unrecoverable"] == "confirmed"
        assert before.last_steps()[-1] in ("paused", "erase_started"), before.last_steps()


@pytest.mark.parametrize("when", ["erasing", "back"])
async def test_restart_at_other_moments_of_the_erase(tmp_path: Path, when: str) -> None:
    async with CrashBench(tmp_path, [], ios_profiles=["clean"]) as bench:
        (phone,) = bench.iphones
        cert, _steps, _before = await stop_and_restart(bench, signal.SIGKILL, when)
        assert phone.erase_count == 1
        assert cert.outcome == "erased", cert.payload["verification"]
