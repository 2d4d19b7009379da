"""The whole agent over simulated iPhones: usbmuxd source, pairing, erase, certificates.

Nothing is mocked: the fake usbmuxd + lockdownd speak the real protocols to
pymobiledevice3, the driver validates what the phones say, certificates are signed and
verified with the real code. Misbehaving phones (malformed plists, oversized frames, a
failing TLS handshake, a phone that never comes back from its erase) end their own session
and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wipeagent.assemble import build_agent
from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import check_sequence, verify_certificate
from wipeagent.clock import Clock
from wipeagent.models import Outcome
from wipeagent.session import SessionResult
from wipeagent.sources.usbmux import make_usbmux_source
from wipeagent_sim.demo import demo_config, ios_profiles, ios_slot
from wipeagent_sim.ios import SimIosBench

# The lying phones have their own test (tests/test_lying_phones.py).
PROFILES = {p.name: p for p in ios_profiles() if not p.name.startswith("liar_")}

BAD = {
    "bad_malformed": ("[faults]\nmalformed_values = true\n", "protocol_error"),
    "bad_oversized": ("[faults]\noversized_frame = true\n", "protocol_error"),
    "bad_tls": ("[faults]\ntls_failure = true\n", "protocol_error"),
    "bad_never_returns": ("[faults]\nnever_returns = true\n", "device_timeout"),
}


async def run_ios_bench(tmp_path: Path, phones: list[str | Path], speed: float
                        ) -> tuple[dict[str, SessionResult], Path, dict[str, Any]]:
    """Run the agent over simulated iPhones until every phone's session ended.
    Returns results by profile name, the state directory and the certificate payloads."""
    clock = Clock(speed)
    sysfs = tmp_path / "sysfs"
    async with SimIosBench(phones, clock=clock, sysfs_root=sysfs) as bench:
        config = demo_config(tmp_path / "state", usbmuxd=bench.address)
        config = config.model_copy(update={"ios": config.ios.model_copy(
            update={"pair_timeout_s": 60, "reboot_timeout_s": 300})})
        # Each phone's slot is its USB port's label in the configuration: the same before
        # and after its erase reboot (a new USB address), so results map back by slot.
        names = {ios_slot(bench, p.udid): p.profile.name for p in bench.phones}
        assert len(names) == len(bench.phones)
        agent, store, _ = await build_agent(config, clock=clock)
        agent.sources = [*agent.sources,
                         make_usbmux_source(config, clock, config.state_path, sysfs=sysfs)]
        try:
            results = await agent.run(until=lambda a: a.completed >= len(names))
            sessions = await store.sessions()
            assert all(s.state == "done" for s in sessions), sessions
        finally:
            await store.close()
    state = tmp_path / "state"
    trust = dev_trust_root(state / "dev-pki")
    verified = [verify_certificate(f.read_bytes(), trust_roots=[trust])
                for f in sorted((state / "certificates").glob("*.jws.json"))]
    assert check_sequence(verified) == []
    payloads: dict[str, Any] = {str(v.payload["device"]["udid"]): v.payload
                                for v in verified if v.payload["device"]}
    return {names[r.slot]: r for r in results}, state, payloads


async def test_every_ios_profile_ends_as_expected(tmp_path: Path) -> None:
    results, _state, payloads = await run_ios_bench(tmp_path, sorted(PROFILES), speed=50)
    assert set(results) == set(PROFILES)
    for name, result in results.items():
        profile = PROFILES[name]
        assert result.outcome.value == profile.expected_outcome, (name, result.reasons)
        if profile.expected_reason:
            assert profile.expected_reason in result.codes, (name, result.codes)
        if result.outcome is Outcome.NOT_ERASED:
            assert all("(" in r for r in result.reasons), result.reasons  # a hint each
        else:
            assert result.record is not None and result.record.category is not None
            assert result.record.category.value == profile.expected_category
            ids = {c.id: c for c in result.record.verification}
            assert ids["ios.verify.old_pairing"].status.value == "pass"
            assert ids["ios.verify.identity_key"].status.value == "pass"
    # The passcode-locked phone waited for Trust and was told how to fix it.
    locked = results["passcode_locked"]
    assert "tap Trust" in locked.reasons[0] and locked.certificate is None
    # Certificates say no more than was checked: Find My read over lockdown never makes
    # Activation Lock "not present"; an ADE enrolment is a present MDM lock.
    clean = results["clean"]
    assert clean.identity is not None and clean.identity.udid is not None
    assert clean.certificate is not None
    by_udid = payloads
    # The certificate names the slot the bench labels that USB port with, the same one the
    # phone had before its erase reboot gave it a new USB address.
    assert by_udid[clean.identity.udid]["custody"]["slot"] == clean.slot
    assert clean.slot.startswith("iPhone ")
    locks = by_udid[clean.identity.udid]["locks"]
    assert locks["activation_lock"]["state"] == "inconclusive"
    assert locks["google_frp"]["state"] == "not_applicable"
    mdm = results["supervised_mdm"]
    assert mdm.identity is not None and mdm.identity.udid is not None
    assert by_udid[mdm.identity.udid]["locks"]["mdm"]["state"] == "present"
    assert by_udid[mdm.identity.udid]["verification"]["data_unrecoverable"] == "confirmed"
    findmy = results["findmy_on"]
    assert findmy.identity is not None and findmy.identity.udid is not None
    assert by_udid[findmy.identity.udid]["locks"]["activation_lock"]["state"] == "present"


async def test_bad_iphones_end_cleanly_and_a_good_one_carries_on(tmp_path: Path) -> None:
    phones: list[str | Path] = ["clean"]
    for name, (faults, _code) in BAD.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(f'name = "{name}"\n[trust]\nauto_accept_after = 1.0\n{faults}',
                        encoding="utf-8")
        phones.append(path)
    results, _state, _ = await run_ios_bench(tmp_path, phones, speed=100)
    assert results["clean"].outcome is Outcome.ERASED, results["clean"].reasons
    for name, (_faults, code) in BAD.items():
        result = results[name]
        assert result.outcome is Outcome.NOT_ERASED, (name, result.reasons)
        assert code in result.codes, (name, result.codes, result.reasons)
    # The phone that never came back had its erase started: never certified as erased.
    gone = results["bad_never_returns"]
    assert "erase was started" in gone.reasons[0]
