"""The erase policies over a running simulated bench, driven through the control API."""

from __future__ import annotations

from typing import Any

import pytest

from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import verify_certificate
from wipeagent.control.client import ControlApiError
from wipeagent.models import Outcome


def _awaiting(slot: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        return any(s["slot"] == slot and s["awaiting_confirmation"] for s in status["slots"])
    return check


async def test_confirm_policy_erases_only_what_a_signed_in_operator_confirms(
        control_bench: Any) -> None:
    async with control_bench(["pixel8-clean", "unencrypted"]) as h:
        pixel, alcatel = h.slots["pixel8-clean"], h.slots["unencrypted"]
        status = await h.until(lambda s: _awaiting(pixel)(s) and _awaiting(alcatel)(s))
        # Status reflects the running bench: both phones identified, waiting, not erased.
        by_slot = {s["slot"]: s for s in status["slots"]}
        assert by_slot[pixel]["phone"]["serial"] == "38211FDH2004NJ"
        assert by_slot[pixel]["running"] and by_slot[pixel]["step"] == "confirm"
        assert 0 < by_slot[pixel]["progress"] < 1
        assert any("confirm" in step["step"] for step in by_slot[pixel]["steps"])
        # Waiting is really waiting: a long bench pause and still no erase on either phone.
        await h.clock.sleep(120)
        for entry in h.sim.phones:
            assert entry.phone.counters.power_cycles == 0

        # Nobody signed in: no confirmation.
        with pytest.raises(ControlApiError) as refused:
            await h.client.confirm(pixel)
        assert (refused.value.status, refused.value.code) == (401, "not_signed_in")
        await h.client.login("j.smith", h.pin)
        # Answering for another session than the one on the slot is refused.
        with pytest.raises(ControlApiError) as changed:
            await h.client.confirm(pixel, session_id="00000000-0000-0000-0000-000000000000")
        assert changed.value.code == "session_changed"
        with pytest.raises(ControlApiError) as swapped:
            await h.client.confirm(pixel, serial="SOMEONE-ELSE")
        assert swapped.value.code == "phone_changed"

        done = await h.client.confirm(pixel, serial="38211FDH2004NJ")
        assert done["confirmed_by"] == "j.smith"
        await h.client.abort(alcatel)
        with pytest.raises(ControlApiError) as twice:
            await h.client.abort(alcatel)
        assert twice.value.code == "nothing_to_confirm"

        results = await h.results()
        assert results["pixel8-clean"].outcome is Outcome.ERASED
        assert results["unencrypted"].outcome is Outcome.NOT_ERASED
        assert "not_confirmed" in results["unencrypted"].codes
        assert h.sim.phone("BLH4XC6LYP4TZD9P").counters.power_cycles == 0

        # The confirming operator is in the signed certificate (not the config's default).
        status = await h.client.status()
        cert_id = next(s["certificate_id"] for s in status["slots"] if s["slot"] == pixel)
        data = await h.client.certificate(cert_id)
        trust = dev_trust_root(h.config.state_path / "dev-pki")
        verified = verify_certificate(data, trust_roots=[trust])
        assert verified.payload["custody"]["operator"] == "j.smith"
        assert verified.outcome == "erased"
        # ... and the confirmation is journaled before the erase started.
        steps = [s.step for s in await h.store.steps(results["pixel8-clean"].session_id)]
        assert steps.index("confirmed") < steps.index("erase_started")
        aborted, _ = await h.client.request(
            "GET", f"/sessions/{results['unencrypted'].session_id}/certificate")
        refused_cert = verify_certificate(aborted, trust_roots=[trust])
        assert refused_cert.outcome == "not_erased"
        assert any("not confirmed" in r for r in refused_cert.payload["outcome"]["reasons"])
        pdf = await h.client.certificate_pdf(cert_id)
        assert pdf.startswith(b"%PDF-")
        assert (await h.client.certificate_pdf(cert_id, "zh")).startswith(b"%PDF-")


async def test_confirm_times_out_as_not_erased(control_bench: Any) -> None:
    async with control_bench(["pixel8-clean"], confirm_timeout_s=30) as h:
        (result,) = (await h.results()).values()
        assert result.outcome is Outcome.NOT_ERASED
        assert "not_confirmed" in result.codes
        assert h.sim.phones[0].phone.counters.power_cycles == 0
        history = (await h.slot_status("pixel8-clean"))["steps"]
        assert any("nobody confirmed" in e["message"] for e in history)


async def test_intake_policy_erases_only_booked_in_phones(control_bench: Any) -> None:
    async with control_bench(["pixel8-clean", "unencrypted"], policy="intake",
                             confirm_timeout_s=1, start=False) as h:
        # The platform (here: the API) books one phone in before the phones are processed.
        added = await h.client.add_intake([{"serial": "38211FDH2004NJ", "reference": "TI-1"}])
        assert added == 1
        for bad in ({"serial": "a b"}, {"imei": "490154203237519"}, {"serial": "x", "imei": "1"},
                    "nope"):
            with pytest.raises(ControlApiError) as refused:
                await h.client.add_intake([bad])  # type: ignore[list-item]
            assert refused.value.status == 400
        h.start()
        results = await h.results()
        assert results["pixel8-clean"].outcome is Outcome.ERASED
        assert results["unencrypted"].outcome is Outcome.NOT_ERASED
        assert results["unencrypted"].codes == ("not_booked_in",)
        assert h.sim.phone("BLH4XC6LYP4TZD9P").counters.power_cycles == 0
        steps = await h.store.steps(results["pixel8-clean"].session_id)
        booked = next(s for s in steps if s.step == "booked_in")
        assert booked.data["reference"] == "TI-1"
        listing = await h.client.call("GET", "/intake")
        assert [e["identifier"] for e in listing["entries"]] == ["38211FDH2004NJ"]


async def test_unplugged_while_waiting_asks_again_after_replug(control_bench: Any) -> None:
    async with control_bench(["pixel8-clean"], start=False) as h:
        h.start(completed=2)  # the paused session, then the resumed one
        serial = "38211FDH2004NJ"
        first = await h.wait_awaiting("pixel8-clean")
        await h.client.login("a.tech", h.pin)
        h.sim.unplug(serial)
        await h.until(lambda st: not st["slots"][0]["awaiting_confirmation"]
                      and st["slots"][0]["step"] == "paused")
        # The question went with the phone: nothing to confirm now.
        with pytest.raises(ControlApiError) as gone:
            await h.client.confirm(h.slots["pixel8-clean"])
        assert gone.value.code == "nothing_to_confirm"
        assert h.bench.pending == {}
        h.sim.plug(serial)
        again = await h.wait_awaiting("pixel8-clean")
        assert again["session_id"] == first["session_id"]  # resumed from the journal
        assert h.sim.phone(serial).counters.power_cycles == 0
        await h.client.confirm(h.slots["pixel8-clean"], session_id=again["session_id"])
        (result,) = (await h.results()).values()
        assert result.outcome is Outcome.ERASED
        assert result.record is not None and result.record.operator == "a.tech"
