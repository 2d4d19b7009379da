"""The demo, end to end: every Android phone it erases leaves the bench safe for its next
owner (each Test Harness Mode setting put back on the phone, USB debugging off), or, under
policy final_reset, reset once more by the simulated technician; the certificates show
the hand-off, the IMEIs and where they came from, and the bookings."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import verify_certificate
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.demo import run_demo

ERASED_ANDROID = {"pixel8-clean", "rooted", "unencrypted", "android9"}


def _certificates(out: Path) -> dict[str, dict[str, Any]]:
    """Verified payloads by the model of the phone."""
    trust = dev_trust_root(out / "state" / "dev-pki")
    payloads = {}
    for path in (out / "state" / "certificates").glob("*.jws.json"):
        payload = verify_certificate(path.read_bytes(), trust_roots=[trust]).payload
        if payload["device"] is not None:
            payloads[payload["device"]["serial"]] = payload
    return payloads


async def _demo(tmp_path: Path, handoff: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    seen: dict[str, Any] = {}

    def inspect(bench: SimBench) -> None:
        for entry in bench.phones:
            phone = entry.phone
            seen[entry.profile] = {
                "serial": phone.serial, "adb": phone.adb_enabled(),
                "global": dict(phone.settings["global"]),
                "secure": dict(phone.settings["secure"]), "lock": phone.lock_screen,
                "keys": phone.authorised_keys(), "setup": phone.setup_complete,
                "harness": phone.properties().get("persist.sys.test_harness"),
                "resets": phone.counters.factory_resets}

    output = io.StringIO()
    code = await run_demo(tmp_path, speed=40, json_out=True,
                          console=Console(file=output, width=200), handoff=handoff,
                          inspect=inspect)
    summary = json.loads(output.getvalue())
    return code, summary, seen


async def test_demo_leaves_android_phones_safe_for_their_next_owner(tmp_path: Path) -> None:
    code, summary, phones = await _demo(tmp_path, "restore")
    assert code == 0 and summary["ok"]
    certificates = _certificates(tmp_path)
    for name in ERASED_ANDROID:
        phone = phones[name]
        glob, secure = phone["global"], phone["secure"]
        assert phone["adb"] is False and glob["adb_enabled"] == "0", name
        for key in ("verifier_verify_adb_installs", "package_verifier_enable",
                    "ota_disable_automatic_update", "adb_allowed_connection_time"):
            assert key not in glob, (name, key)
        assert glob["stay_on_while_plugged_in"] == "0", name
        assert glob["development_settings_enabled"] == "0", name
        assert phone["lock"] == "swipe", name
        payload = certificates[phone["serial"]]
        handoff = payload["handoff"]
        assert (handoff["policy"], handoff["status"]) == ("restore", "completed"), name
        items = {i["id"]: i["result"] for i in handoff["items"]}
        assert items["usb_debugging"] == "restored" and items["bench_key"] == "not_restorable"
        if name != "android9":  # Test Harness Mode phones; android9 had a guided reset
            assert secure["location_mode"] == "0", name
            assert phone["harness"] == "1" and items["test_harness_mode"] == "not_restorable"
        assert payload["device"]["imeis"], name
    # IMEIs: two per dual-SIM phone, read from the phone; the one that refuses gets the
    # technician's scan, which also matches its booking.
    pixel = certificates[phones["pixel8-clean"]["serial"]]
    assert len(pixel["device"]["imeis"]) == 2 and pixel["device"]["imei_source"] == "phone"
    assert pixel["device"]["model_number"] == "Pixel 8"
    assert pixel["intake"]["reference"] == "TI-1001"
    alcatel = certificates[phones["unencrypted"]["serial"]]
    assert alcatel["device"]["imei_source"] == "technician"
    assert alcatel["intake"] == {"reference": "TI-1002", "matched_by": "imei",
                                 "identifier": alcatel["device"]["imeis"][0],
                                 "source": "platform"}
    # Phones that were not erased keep their state and get no hand-off.
    for name in ("locked", "samsung-frp"):
        assert phones[name]["adb"] is True
        assert certificates[phones[name]["serial"]]["handoff"] is None
    # iPhones: the state they leave in, and this bench's pairing removed.
    ios = [p for p in certificates.values() if p["device"]["platform"] == "ios"
           and p["handoff"] is not None]
    assert ios and all({"setup_assistant", "activation_lock", "bench_pairing"}
                       <= {i["id"] for i in p["handoff"]["items"]} for p in ios)


@pytest.mark.timeout(300)
async def test_demo_final_reset_with_the_simulated_technician(tmp_path: Path) -> None:
    code, summary, phones = await _demo(tmp_path, "final_reset")
    assert code == 0 and summary["ok"]
    certificates = _certificates(tmp_path)
    for name in ERASED_ANDROID:
        phone = phones[name]
        # Out of the box: no keys, no USB debugging, no Test Harness Mode, setup waiting.
        assert phone["keys"] == [] and phone["adb"] is False, name
        assert phone["harness"] is None and phone["setup"] is False, name
        handoff = certificates[phone["serial"]]["handoff"]
        assert handoff["policy"] == "final_reset" and handoff["status"] == "completed"
        assert handoff["attested_by"] == "demo-technician"
        assert [i["result"] for i in handoff["items"]] == ["attested"]
