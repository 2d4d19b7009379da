"""Phones that lie around their erase, and honest phones with noisy answers.

Each lying simulator profile (data, not code: `[lie]` in an Android profile, lying
`[erase]` keys in an iPhone profile) must end with the outcome its `[meta]` / `[expect]`
names, the reason code named, and the named checks not passing; no certificate may claim
more than the simulator's truth (what really happened to the data, whatever the phone
said); every session whose erase started ends with a certificate. The honest phone whose
every answer carries harmless noise (trailing spaces, blank lines, CRLF) is erased.

Nothing is mocked: the agent's real drivers talk to the simulators over ADB and
usbmuxd/lockdown; certificates are signed and verified with the real code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wipeagent.assemble import build_agent
from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import check_sequence, verify_certificate
from wipeagent.clock import Clock
from wipeagent.session import SessionResult
from wipeagent.sources.usbmux import make_usbmux_source
from wipeagent.store import Store
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.android.profiles import list_profiles
from wipeagent_sim.demo import check_expectation, demo_config, ios_profiles, ios_slot
from wipeagent_sim.ios import SimIosBench

ANDROID = {p.name: p for p in list_profiles()}
IOS = {p.name: p for p in ios_profiles()}
ANDROID_LIARS = sorted(n for n in ANDROID if n.startswith(("liar-", "confuse-", "noisy-")))
IOS_LIARS = sorted(n for n in IOS if n.startswith("liar_"))


def certificates(state: Path) -> list[Any]:
    trust = dev_trust_root(state / "dev-pki")
    verified = [verify_certificate(f.read_bytes(), trust_roots=[trust])
                for f in sorted((state / "certificates").glob("*.jws.json"))]
    assert check_sequence(verified) == []
    return verified


async def every_erase_certified(state: Path) -> None:
    """Every session whose erase started has a certificate (none crashed without one)."""
    async with Store(state / "journal.sqlite3") as store:
        for session in await store.sessions():
            steps = [s.step for s in await store.steps(session.id)]
            if "erase_started" in steps:
                assert "certified" in steps, (session, steps)


def check(name: str, info: Any, result: SessionResult, truth: dict[str, object]) -> None:
    category = result.record.category.value if result.record and result.record.category \
        else None
    problem = check_expectation(info, result, category)
    assert problem is None, (name, problem, result.reasons, result.codes, truth)
    if result.outcome.value != "not_erased":
        assert truth["erased"], (name, "certified erased but the data is still there", truth)
    if result.outcome.value == "not_erased" and not {
            "validation_failed", "verification_failed"} & set(result.codes):
        # A failure (not a failed check, which names itself) comes with a hint.
        assert all("(" in r for r in result.reasons), (name, result.reasons)


async def test_lying_android_phones_end_as_the_truth_allows(tmp_path: Path) -> None:
    assert len(ANDROID_LIARS) >= 13, ANDROID_LIARS
    names = ["pixel8-clean", *ANDROID_LIARS]
    clock = Clock(50)
    config = demo_config(tmp_path / "state")
    config = config.model_copy(update={"android": config.android.model_copy(
        update={"command_timeout_s": 120, "reboot_timeout_s": 200, "auth_timeout_s": 20})})
    async with SimBench(profiles=names, state_dir=tmp_path / "sims", clock=clock) as bench:
        slots = {f"tcp:{p.host}:{p.port}": p for p in bench.phones}
        agent, store, _ = await build_agent(
            config, clock=clock, extra_endpoints=[s.removeprefix("tcp:") for s in slots])
        try:
            results = await agent.run(until=lambda a: a.completed >= len(slots))
        finally:
            await store.close()
        truths = {slots[r.slot].profile: slots[r.slot].phone.truth() for r in results}
    by_name = {slots[r.slot].profile: r for r in results}
    assert set(by_name) == set(names)
    for name, result in by_name.items():
        check(name, ANDROID[name], result, truths[name])
    assert by_name["noisy-honest"].outcome.value == "erased", by_name["noisy-honest"].reasons
    assert len(certificates(tmp_path / "state")) == len(names)
    await every_erase_certified(tmp_path / "state")


async def test_lying_iphones_end_as_the_truth_allows(tmp_path: Path) -> None:
    assert len(IOS_LIARS) >= 7, IOS_LIARS
    names = ["clean", *IOS_LIARS]
    clock = Clock(50)
    sysfs = tmp_path / "sysfs"
    async with SimIosBench(names, clock=clock, sysfs_root=sysfs) as bench:
        config = demo_config(tmp_path / "state", usbmuxd=bench.address)
        config = config.model_copy(update={"ios": config.ios.model_copy(
            update={"pair_timeout_s": 60, "reboot_timeout_s": 300})})
        phones = {ios_slot(bench, p.udid): p for p in bench.phones}
        agent, store, _ = await build_agent(config, clock=clock)
        agent.sources = [*agent.sources,
                         make_usbmux_source(config, clock, config.state_path, sysfs=sysfs)]
        try:
            results = await agent.run(until=lambda a: a.completed >= len(phones))
        finally:
            await store.close()
        truths = {phones[r.slot].profile.name: phones[r.slot].truth() for r in results}
    by_name = {phones[r.slot].profile.name: r for r in results}
    assert set(by_name) == set(names)
    for name, result in by_name.items():
        check(name, IOS[name], result, truths[name])
    assert by_name["clean"].outcome.value == "erased"
    # Every phone whose erase was started has a certificate, the crash-prone one included.
    assert len(certificates(tmp_path / "state")) == len(names)
    await every_erase_certified(tmp_path / "state")
