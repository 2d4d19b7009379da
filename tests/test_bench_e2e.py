"""The whole agent over simulated phones that speak real ADB: outcomes, journal, chain.

Nothing is mocked: the fake adbd speaks the wire protocol to adb-shell, the driver parses
real Android output formats, certificates are signed and verified with the real code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wipeagent.assemble import build_agent
from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import check_sequence, verify_certificate
from wipeagent.clock import Clock
from wipeagent.models import Outcome
from wipeagent.session import SessionResult
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.android.profiles import list_profiles
from wipeagent_sim.demo import demo_config

PROFILES = {p.name: p for p in list_profiles()}
BAD = sorted(name for name, p in PROFILES.items() if name.startswith("bad-"))


async def run_bench(tmp_path: Path, names: list[str], speed: float = 50) -> tuple[
        dict[str, SessionResult], Path]:
    clock = Clock(speed)
    config = demo_config(tmp_path / "state")
    # Short timeouts: a hanging phone must end its session, not the test.
    config = config.model_copy(update={"android": config.android.model_copy(
        update={"command_timeout_s": 20, "reboot_timeout_s": 200})})
    async with SimBench(profiles=names, state_dir=tmp_path / "sims", clock=clock) as bench:
        slots = {f"tcp:{p.host}:{p.port}": p.profile for p in bench.phones}
        agent, store, _ = await build_agent(
            config, clock=clock, extra_endpoints=[s.removeprefix("tcp:") for s in slots])
        try:
            results = await agent.run(until=lambda a: a.completed >= len(slots))
            sessions = await store.sessions()
            assert all(s.state == "done" for s in sessions), sessions
        finally:
            await store.close()
    return {slots[r.slot]: r for r in results}, tmp_path / "state"


async def test_bad_phones_end_cleanly_and_good_phone_carries_on(tmp_path: Path) -> None:
    results, state = await run_bench(tmp_path, ["pixel8-clean", *BAD])
    assert set(results) == {"pixel8-clean", *BAD}
    for name, result in results.items():
        profile = PROFILES[name]
        assert result.outcome.value == profile.expected_outcome, (name, result.reasons)
        if profile.expected_reason:
            assert profile.expected_reason in result.codes, (name, result.codes)
        if result.outcome is Outcome.NOT_ERASED:
            # Every reason carries a hint the technician can act on.
            assert all("(" in r for r in result.reasons), result.reasons
    # Every certificate verifies, and the station chain has no gap, fork or duplicate.
    trust = dev_trust_root(state / "dev-pki")
    files = sorted((state / "certificates").glob("*.jws.json"))
    verified = [verify_certificate(f.read_bytes(), trust_roots=[trust]) for f in files]
    assert len(verified) == sum(r.certificate is not None for r in results.values())
    assert check_sequence(verified) == []
    for v in verified:
        if v.payload["outcome"]["result"] != "not_erased":
            assert v.payload["verification"]["data_unrecoverable"] == "confirmed"


async def test_metacharacters_never_reach_a_shell(tmp_path: Path) -> None:
    clock = Clock(50)
    config = demo_config(tmp_path / "state")
    async with SimBench(profiles=["bad-metachar"], state_dir=tmp_path / "sims",
                        clock=clock) as bench:
        (entry,) = bench.phones
        agent, store, _ = await build_agent(config, clock=clock,
                                            extra_endpoints=[f"{entry.host}:{entry.port}"])
        try:
            (result,) = await agent.run(until=lambda a: a.completed >= 1)
        finally:
            await store.close()
        history = list(entry.phone.counters.history)
    assert result.outcome is Outcome.NOT_ERASED
    assert "ro.product.model" in result.reasons[0]
    # `$(reboot)` was never interpreted: the phone never power-cycled.
    assert entry.phone.counters.power_cycles == 0, history


@pytest.mark.hardware
async def test_real_phone_over_tcp() -> None:  # pragma: no cover - needs a phone
    """With WIPEAGENT_HARDWARE=1 and a phone on network debugging at WIPEAGENT_PHONE."""
    raise AssertionError("run on a real bench only")
