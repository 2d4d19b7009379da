"""What sessions ask of the technician (an IMEI the phone will not give, the final reset
of policy.handoff = "final_reset"), answered over the real control socket by scanning,
typing and the CLI: which phone a scanned IMEI answers, what it books in, what the CLI's
status line tells the technician to run. No phones: the questions are asked by the real
BenchTechnician for stand-in sessions."""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, ControlConfig
from wipeagent.control import cli
from wipeagent.control.bench import BenchState
from wipeagent.control.client import ControlApiError, ControlClient
from wipeagent.control.desk import IMEI_INSTRUCTIONS
from wipeagent.control.operators import OperatorRegistry
from wipeagent.control.server import ControlServer
from wipeagent.i18n import translator
from wipeagent.session import FINAL_RESET_INSTRUCTIONS
from wipeagent.store import Store
from wipeagent.technician import Attestation, EnteredImeis

PIN = "135790"
IMEI_A = "351234567890124"
IMEI_B = "860123456789014"
BOOKED = "490154203237518"


@asynccontextmanager
async def served(tmp_path: Path, policy: str = "confirm"
                 ) -> AsyncIterator[tuple[ControlServer, ControlClient, BenchState]]:
    clock = Clock(50)
    with tempfile.TemporaryDirectory(prefix="wac-") as short:
        config = AgentConfig(state_dir=str(tmp_path / "state"),
                             control=ControlConfig(socket=f"{short}/control.sock", group=""))
        bench = BenchState(clock, station_id="bench-01", policy=policy)
        OperatorRegistry.for_state_dir(config.state_path).add("j.smith", PIN)
        async with Store(tmp_path / "journal.sqlite3") as store:
            server = ControlServer(bench, store, config, trust_roots=[])
            async with server, ControlClient(server.socket_path, clock=clock,
                                             timeout_s=1500) as client:
                yield server, client, bench


def _session(slot: str, session_id: str) -> Any:
    """What BenchTechnician reads of a session (no observer: events go to the bench)."""
    return SimpleNamespace(slot=slot, session_id=session_id, observer=None)


def _identity(serial: str) -> Any:
    return SimpleNamespace(manufacturer="Alcatel", model="5033D", serial=serial)


async def _asked(server: ControlServer, kind: str, slot: str) -> None:
    """Until the phone on `slot` asks (the question is shown on the bench first)."""
    while (kind, slot) not in server.technician.pending:
        assert await server.technician.bench.changed(50), (kind, slot)


def _line(status: dict[str, Any], lang: str = "en") -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(
        cli.render_status(status, translator(lang), 200))
    return buffer.getvalue()


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"socket": None, "config": None, "lang": "en", "slot": None}
    base.update(kw)
    return argparse.Namespace(**base)


async def test_a_scanned_imei_answers_the_phone_that_waits_for_it(tmp_path: Path) -> None:
    async with served(tmp_path) as (server, client, _):
        technician = server.technician
        first = asyncio.create_task(technician.enter_imeis(_session("usb:1-1", "s1"),
                                                           _identity("SER1")))
        second = asyncio.create_task(technician.enter_imeis(_session("usb:1-2", "s2"),
                                                            _identity("SER2")))
        await _asked(server, "imei", "usb:1-1")
        await _asked(server, "imei", "usb:1-2")
        status = await client.status()
        for slot in status["slots"]:
            # The page shows these in the operator's language; the CLI adds the command.
            assert slot["need"] == "enter_imei"
            assert slot["instructions"] == list(IMEI_INSTRUCTIONS)
        text = _line(status)
        assert "wipeagent intake imei usb:1-1 IMEI" in text
        assert "wipeagent intake imei usb:1-2 IMEI" in text
        assert "扫描" in _line(status, "zh-CN")  # the instruction, in Chinese

        with pytest.raises(ControlApiError) as nobody:
            await client.call("POST", "/intake/scan", {"code": IMEI_A})
        assert nobody.value.code == "not_signed_in"
        await client.login("j.smith", PIN)
        # Two phones wait and none is chosen: the scan answers neither, books nothing.
        with pytest.raises(ControlApiError) as which:
            await client.call("POST", "/intake/scan", {"code": IMEI_A})
        assert (which.value.status, which.value.code) == (409, "choose_phone")
        assert await client.intake() == []
        # A slot that moved on to another session takes nothing.
        with pytest.raises(ControlApiError) as moved:
            await client.call("POST", "/intake/scan",
                              {"code": IMEI_A, "slot": "usb:1-1", "session_id": "old"})
        assert moved.value.code == "session_changed"
        # The chosen tile's phone gets it; without a booking reference nothing is booked
        # in (the certificate would claim a booking nobody made).
        done = await client.call("POST", "/intake/scan",
                                 {"code": IMEI_A, "slot": "usb:1-1", "session_id": "s1"})
        assert done["booked"] is None
        assert (done["imei_entered"]["slot"], done["imei_entered"]["imeis"]) == (
            "usb:1-1", [IMEI_A])
        entered = await asyncio.wait_for(first, 10)
        assert isinstance(entered, EnteredImeis)
        assert (entered.imeis, entered.operator) == ((IMEI_A,), "j.smith")
        assert await client.intake() == []

        # One phone left waiting: a booking reference, then its IMEI (from the CLI), with
        # no slot chosen: answered and booked in under that reference.
        sock = str(server.socket_path)
        with redirect_stdout(io.StringIO()):
            assert await asyncio.to_thread(cli.cmd_scan, _args(socket=sock, code="TI-7")) == 0
        out = io.StringIO()
        with redirect_stdout(out):
            assert await asyncio.to_thread(cli.cmd_scan, _args(socket=sock, code=IMEI_B)) == 0
        assert "booked in: 860123456789014 (reference TI-7)" in out.getvalue()
        assert "usb:1-2: IMEI 860123456789014 entered by j.smith for serial SER2" \
            in out.getvalue()
        assert (await asyncio.wait_for(second, 10)).imeis == (IMEI_B,)  # type: ignore[union-attr]
        assert [(e["identifier"], e["reference"]) for e in await client.intake()] == [
            (IMEI_B, "TI-7")]

        # Nobody waits now: an IMEI scan only books the phone in, as before.
        done = await client.call("POST", "/intake/scan", {"code": IMEI_A})
        assert done["imei_entered"] is None and done["booked"]["identifier"] == IMEI_A
        audit = await client.call("GET", "/audit", params={"action": "imei_entry"})
        assert sorted((e["slot"], e["result"]) for e in audit["entries"]) == [
            ("usb:1-1", "ok"), ("usb:1-2", "ok")]


async def test_a_scan_never_replaces_the_platforms_booking(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, client, _b):
        await client.login("j.smith", PIN)
        await client.add_intake([{"imei": BOOKED, "reference": "TI-1"}])
        done = await client.call("POST", "/intake/scan", {"code": BOOKED})
        assert done["booked"]["reference"] == "TI-1"
        assert [(e["identifier"], e["reference"]) for e in await client.intake()] == [
            (BOOKED, "TI-1")]
        # A reference scanned just before the IMEI is the technician's correction.
        await client.call("POST", "/intake/scan", {"code": "TI-2"})
        await client.call("POST", "/intake/scan", {"code": BOOKED})
        assert [e["reference"] for e in await client.intake()] == ["TI-2"]
        # Taking it off the list is an operator's action, recorded.
        await client.remove_intake(BOOKED)
        with pytest.raises(ControlApiError) as gone:
            await client.remove_intake(BOOKED)
        assert (gone.value.status, gone.value.code) == (404, "no_such_entry")
        await client.logout()
        with pytest.raises(ControlApiError) as nobody:
            await client.remove_intake(BOOKED)
        assert nobody.value.code == "not_signed_in"
        audit = await client.call("GET", "/audit", params={"action": "intake_remove"})
        assert sorted((e["result"], e["operator"]) for e in audit["entries"]) == [
            ("ok", "j.smith"), ("refused", "j.smith")]


async def test_typed_imeis_and_the_final_reset_from_the_cli(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(tmp_path, policy="auto") as (server, client, _):
        technician = server.technician
        imei = asyncio.create_task(technician.enter_imeis(_session("usb:2-1", "s1"),
                                                          _identity("SER1")))
        final = asyncio.create_task(technician.attest_final_reset(_session("usb:2-2", "s2"),
                                                                  _identity("SER2")))
        await _asked(server, "imei", "usb:2-1")
        await _asked(server, "final_reset", "usb:2-2")
        status = await client.status()
        by_slot = {s["slot"]: s for s in status["slots"]}
        assert by_slot["usb:2-2"]["need"] == "final_reset"
        assert by_slot["usb:2-2"]["instructions"] == list(FINAL_RESET_INSTRUCTIONS)
        assert "-> wipeagent handoff usb:2-2" in _line(status)
        # At 80 columns the command is never cut (the instruction and the phone are), even
        # behind a long slot name.
        status["slots"].append({**by_slot["usb:2-1"], "slot": "tcp:127.0.0.1:50001"})
        narrow = io.StringIO()
        Console(file=narrow, width=80, color_system=None).print(
            cli.render_status(status, translator("en"), 80))
        assert "wipeagent handoff usb:2-2" in narrow.getvalue()
        assert "wipeagent intake imei usb:2-1 IMEI" in narrow.getvalue()
        assert "wipeagent intake imei tcp:127.0.0.1:50001 IMEI" in narrow.getvalue()
        assert max(len(line) for line in narrow.getvalue().splitlines()) <= 80

        sock = str(server.socket_path)
        monkeypatch.setattr("sys.stdin", io.StringIO(PIN + "\n"))
        with redirect_stdout(io.StringIO()):
            assert await asyncio.to_thread(cli.cmd_login,
                                           _args(socket=sock, operator="j.smith")) == 0
        # IMEI and --none together, or neither: refused before the agent is asked.
        err = io.StringIO()
        with redirect_stderr(err):
            assert await asyncio.to_thread(cli.cmd_intake, _args(
                socket=sock, intake_command="imei", slot="usb:2-1", imeis=[],
                none=False)) == 1
        assert "--none" in err.getvalue()
        out = io.StringIO()
        with redirect_stdout(out):
            assert await asyncio.to_thread(cli.cmd_intake, _args(
                socket=sock, intake_command="imei", slot="usb:2-1", imeis=[IMEI_A, IMEI_B],
                none=False, lang="zh_CN.UTF-8")) == 0
        assert "已由 j.smith 为序列号 SER1 录入 IMEI 351234567890124, 860123456789014" \
            in out.getvalue()
        assert (await asyncio.wait_for(imei, 10)).imeis == (IMEI_A, IMEI_B)  # type: ignore[union-attr]
        out = io.StringIO()
        with redirect_stdout(out):
            assert await asyncio.to_thread(cli.cmd_handoff,
                                           _args(socket=sock, slot="usb:2-2")) == 0
        assert "usb:2-2: final reset of serial SER2 attested by j.smith" in out.getvalue()
        attested = await asyncio.wait_for(final, 10)
        assert isinstance(attested, Attestation) and attested.operator == "j.smith"
        # Asked twice: nothing waits any more; the refusal is in words, with a hint.
        err = io.StringIO()
        with redirect_stderr(err):
            assert await asyncio.to_thread(cli.cmd_handoff, _args(
                socket=sock, slot="usb:2-2", lang="zh-CN")) == 1
        assert "此接口没有手机在等待此项" in err.getvalue()
        assert "用 `wipeagent status` 查看接口名称" in err.getvalue()
