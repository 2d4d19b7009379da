"""IMEI entry, bookings and the final reset through the control API, over a running
simulated bench: the technician's answers reach the signed certificate."""

from __future__ import annotations

from typing import Any

import pytest

from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import verify_certificate
from wipeagent.control import cli
from wipeagent.control.client import ControlApiError
from wipeagent.control.desk import IMEI_INSTRUCTIONS
from wipeagent.models import Outcome

ALCATEL = "BLH4XC6LYP4TZD9P"  # the unencrypted profile, whose shell refuses the IMEI
ALCATEL_IMEI = "359076100238192"


def _at_step(slot: str, step: str) -> Any:
    return lambda status: any(s["slot"] == slot and s["step"] == step
                              for s in status["slots"])


async def _certificate(h: Any, profile: str) -> dict[str, Any]:
    status = await h.client.status()
    cert_id = next(s["certificate_id"] for s in status["slots"]
                   if s["slot"] == h.slots[profile])
    trust = dev_trust_root(h.config.state_path / "dev-pki")
    payload: dict[str, Any] = verify_certificate(await h.client.certificate(cert_id),
                                                 trust_roots=[trust]).payload
    return payload


async def test_technician_enters_the_imei_a_phone_refuses(control_bench: Any) -> None:
    async with control_bench(["unencrypted"], policy="auto", start=False) as h:
        await h.client.add_intake([{"imei": ALCATEL_IMEI, "reference": "TI-42"}])
        h.start()
        slot = h.slots["unencrypted"]
        status = await h.until(_at_step(slot, "imei"))
        entry = next(s for s in status["slots"] if s["slot"] == slot)
        assert entry["need"] == "enter_imei"
        assert entry["instructions"] == list(IMEI_INSTRUCTIONS)  # msgids; shown translated
        assert cli.need_command(entry) == f"wipeagent intake imei {slot} IMEI"
        with pytest.raises(ControlApiError) as nobody:
            await h.client.enter_imeis(slot, [ALCATEL_IMEI])
        assert (nobody.value.status, nobody.value.code) == (401, "not_signed_in")
        await h.client.login("j.smith", h.pin)
        with pytest.raises(ControlApiError) as typo:
            await h.client.enter_imeis(slot, ["359076100238193"])  # check digit wrong
        assert (typo.value.status, typo.value.code) == (400, "bad_imei")
        with pytest.raises(ControlApiError) as swapped:
            await h.client.enter_imeis(slot, [ALCATEL_IMEI], serial="SOMEONE-ELSE")
        assert swapped.value.code == "phone_changed"
        done = await h.client.enter_imeis(slot, [ALCATEL_IMEI], serial=ALCATEL)
        assert done["entered_by"] == "j.smith" and done["imeis"] == [ALCATEL_IMEI]
        with pytest.raises(ControlApiError) as twice:
            await h.client.enter_imeis(slot, [ALCATEL_IMEI])
        assert twice.value.code == "nothing_to_answer"

        results = await h.results()
        assert results["unencrypted"].outcome is Outcome.ERASED
        payload = await _certificate(h, "unencrypted")
        assert payload["device"]["imeis"] == [ALCATEL_IMEI]
        assert payload["device"]["imei_source"] == "technician"
        # Intake by IMEI matched the phone through the IMEI the technician entered.
        assert payload["intake"] == {"reference": "TI-42", "matched_by": "imei",
                                     "identifier": ALCATEL_IMEI, "source": "api"}
        assert payload["handoff"]["status"] == "completed"


async def test_final_reset_attested_through_the_api(control_bench: Any) -> None:
    async with control_bench(["pixel8-clean"], policy="auto",
                             handoff="final_reset") as h:
        slot = h.slots["pixel8-clean"]
        phone = h.sim.phones[0].phone
        status = await h.until(_at_step(slot, "final_reset"), bench_seconds=3000)
        entry = next(s for s in status["slots"] if s["slot"] == slot)
        assert entry["need"] == "final_reset"
        assert any("Erase all data" in i for i in entry["instructions"])
        assert cli.need_command(entry) == f"wipeagent handoff {slot}"
        await h.client.login("j.smith", h.pin)
        # The technician resets the phone from Settings, then says so.
        await phone.perform_manual_factory_reset()
        done = await h.client.attest_final_reset(slot, serial=phone.serial)
        assert done["attested_by"] == "j.smith"
        results = await h.results()
        assert results["pixel8-clean"].outcome is Outcome.ERASED
        payload = await _certificate(h, "pixel8-clean")
        handoff = payload["handoff"]
        assert (handoff["policy"], handoff["status"], handoff["attested_by"]) == (
            "final_reset", "completed", "j.smith")
        assert [i["result"] for i in handoff["items"]] == ["attested"]
        # The verified erase stays the claim; the phone is out of the box and trusts
        # nobody: no ADB keys, USB debugging off, the setup wizard waiting.
        assert payload["sanitization"]["method_id"] == "android.testharness"
        assert phone.authorised_keys() == [] and not phone.adb_enabled()
        assert not phone.setup_complete
        assert "persist.sys.test_harness" not in phone.properties()
