"""The control API server and CLI on a real unix socket, without phones."""

from __future__ import annotations

import argparse
import asyncio
import grp
import io
import json
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stdout
from pathlib import Path

import pytest
from rich.console import Console

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, ControlConfig
from wipeagent.control import cli
from wipeagent.control.bench import BenchState, ControlError
from wipeagent.control.client import ControlApiError, ControlClient
from wipeagent.control.operators import OperatorRegistry
from wipeagent.control.server import ControlServer
from wipeagent.errors import ConfigError
from wipeagent.i18n import translator
from wipeagent.models import Outcome
from wipeagent.session import SessionEvent
from wipeagent.store import Store

PIN = "135790"


@asynccontextmanager
async def served(tmp_path: Path, group: str = "", metrics: object = None
                 ) -> AsyncIterator[tuple[ControlServer, ControlClient, BenchState]]:
    clock = Clock(50)
    with tempfile.TemporaryDirectory(prefix="wac-") as short:
        config = AgentConfig(state_dir=str(tmp_path / "state"),
                             control=ControlConfig(socket=f"{short}/run/control.sock",
                                                   group=group))
        bench = BenchState(clock, station_id="bench-01", policy="confirm")
        registry = OperatorRegistry.for_state_dir(config.state_path)
        for name in ("Li Wei", "j.smith"):
            registry.add(name, PIN)
        async with Store(tmp_path / "journal.sqlite3") as store:
            server = ControlServer(bench, store, config, metrics=metrics,  # type: ignore[arg-type]
                                   trust_roots=[])
            async with server, ControlClient(server.socket_path, clock=clock,
                                             timeout_s=1500) as client:
                yield server, client, bench


async def test_socket_is_0660_and_carries_the_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    async with served(tmp_path, group=group) as (server, client, _):
        info = server.socket_path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid()
        assert (await client.status())["slots"] == []
    assert not server.socket_path.exists()  # removed at close


async def test_missing_group_is_not_fatal_and_stale_socket_is_replaced(tmp_path: Path) -> None:
    async with served(tmp_path, group="no-such-group-wipeagent") as (server, _c, _b):
        path = server.socket_path
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        # A second server on the same path while the first listens: refused, and the
        # first keeps its socket (closing the refused one must not delete it).
        again = ControlServer(server.bench, server.store, server.config, trust_roots=[])
        with pytest.raises(ConfigError, match="in use by another agent"):
            await again.start()
        await again.close()
        async with ControlClient(path, timeout_s=60) as other:
            assert (await other.status())["policy"] == "confirm"
    # A stale socket file (its agent was killed; nobody listens) is replaced.
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    async with Store(tmp_path / "j2.sqlite3") as store:
        fresh = ControlServer(BenchState(Clock(50)), store, AgentConfig(), socket_path=path,
                              trust_roots=[])
        await fresh.start()
        try:
            async with ControlClient(path, timeout_s=60) as client:
                assert (await client.status())["slots"] == []
        finally:
            await fresh.close()
    assert not path.exists()


async def test_refuses_a_socket_path_that_is_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    async with Store(tmp_path / "j.sqlite3") as store:
        server = ControlServer(BenchState(Clock(50)), store, AgentConfig(), socket_path=path)
        with pytest.raises(ConfigError):
            await server.start()
        await server.close()
    assert path.read_text() == "keep me"


async def test_status_login_and_refusals(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, client, bench):
        bench.observe(SessionEvent("usb:1-3", "s1", "connect", "connecting"))
        bench.observe(SessionEvent("usb:1-3", "s1", "verify", "verifying on the phone"))
        status = await client.status()
        (slot,) = status["slots"]
        assert (slot["step"], slot["progress"], slot["running"]) == ("verify", 0.85, True)
        assert [e["step"] for e in slot["steps"]] == ["connect", "verify"]
        bench.observe(SessionEvent("usb:1-3", "s1", "done", "erased", outcome=Outcome.ERASED))
        slot = await client.call("GET", "/slots/usb%3A1-3")
        assert (slot["outcome"], slot["running"], slot["progress"]) == ("erased", False, 1.0)
        assert slot["certificate_id"] is None  # this session never reached the journal

        for name in ("", "x" * 65, "<b>bold</b>", "a\nb"):
            with pytest.raises(ControlApiError) as bad:
                await client.login(name, PIN)
            assert (bad.value.status, bad.value.code) == (400, "bad_operator")
        # A name alone, or a wrong secret, signs nobody in.
        for secret in ("", "000000", PIN + "0"):
            with pytest.raises(ControlApiError) as wrong:
                await client.login("Li Wei", secret)
            assert (wrong.value.status, wrong.value.code) == (401, "bad_credentials")
        with pytest.raises(ControlApiError) as no_secret:
            await client.call("POST", "/login", {"operator": "Li Wei"})
        assert no_secret.value.code == "bad_credentials"
        assert (await client.status())["operator"] is None
        assert (await client.login("Li Wei", PIN))["operator"] == "Li Wei"
        assert (await client.status())["operator"] == "Li Wei"
        await client.logout()
        assert (await client.status())["operator"] is None

        with pytest.raises(ControlApiError) as missing:
            await client.call("GET", "/slots/nope")
        assert missing.value.status == 404
        with pytest.raises(ControlApiError) as unsigned:
            await client.abort("usb:1-3")  # every action needs a signed-in operator
        assert unsigned.value.code == "not_signed_in"
        await client.login("j.smith", PIN)
        with pytest.raises(ControlApiError) as nothing:
            await client.abort("usb:1-3")
        assert nothing.value.code == "nothing_to_confirm"
        with pytest.raises(ControlApiError) as reverify:
            await client.call("POST", "/slots/usb%3A1-3/reverify")
        assert reverify.value.code == "reverify_not_in_place"
        with pytest.raises(ControlApiError) as bad_id:
            await client.certificate("../../etc/passwd")
        assert bad_id.value.status == 404
        with pytest.raises(ControlApiError) as unknown:
            await client.certificate("0190d6a4-0000-7000-8000-000000000000")
        assert unknown.value.code == "no_such_certificate"
        data, _ = b"", ""
        with pytest.raises(ControlApiError) as not_json:
            data, _ = await client.request("POST", "/login", body="not an object")
        assert not_json.value.status == 400 and data == b""
        with pytest.raises(ControlApiError) as no_metrics:
            await client.request("GET", "/metrics")
        assert no_metrics.value.status == 404


async def test_metrics_come_from_the_provider(tmp_path: Path) -> None:
    text = "# TYPE wipeagent_sessions_total counter\nwipeagent_sessions_total 3\n"
    async with served(tmp_path, metrics=lambda: text) as (_, client, _b):
        body, content_type = await client.request("GET", "/metrics")
    assert body.decode() == text
    assert content_type == "text/plain"


async def test_confirmation_state_machine(tmp_path: Path) -> None:
    bench = BenchState(Clock(50))
    first = bench.request_confirmation("s", "a", "SER")
    second = bench.request_confirmation("s", "b", "SER")
    assert first.answer.result() is None  # a superseded question is answered "no"
    with pytest.raises(ControlError) as nobody:
        bench.confirm("s", operator=None, session_id="b")
    assert nobody.value.code == "not_signed_in"
    assert bench.confirm("s", operator="op", session_id="b").answer.result() == "op"
    bench.withdraw(second)
    assert bench.pending == {}


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"socket": None, "config": None, "json": False, "once": False,
                               "interval": 1.0, "serial": None, "lang": "en", "all": False,
                               "slots": [], "width": 0}
    base.update(kw)
    return argparse.Namespace(**base)


async def test_cli_commands_over_the_socket(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(tmp_path) as (server, client, bench):
        sock = str(server.socket_path)
        bench.observe(SessionEvent("usb:1-4", "s9", "plan", "cryptographic erase"))
        out = io.StringIO()
        with redirect_stdout(out):
            code = await asyncio.to_thread(cli.cmd_status, _args(socket=sock, json=True))
        assert code == 0
        assert json.loads(out.getvalue())["slots"][0]["slot"] == "usb:1-4"
        # The secret is read from the terminal (here: stdin), never from the command line.
        monkeypatch.setattr("sys.stdin", io.StringIO("wrong-pin\n"))
        with redirect_stdout(io.StringIO()):
            assert await asyncio.to_thread(cli.cmd_login,
                                           _args(socket=sock, operator="j.smith")) == 1
        assert bench.operator is None
        monkeypatch.setattr("sys.stdin", io.StringIO(PIN + "\n"))
        with redirect_stdout(io.StringIO()):
            assert await asyncio.to_thread(cli.cmd_login,
                                           _args(socket=sock, operator="j.smith")) == 0
        assert bench.operator == "j.smith"
        # Nothing waits on that slot: the agent refuses, exit 1.
        assert await asyncio.to_thread(cli.cmd_confirm,
                                       _args(socket=sock, slots=["usb:1-4"])) == 1

        confirmations = [bench.request_confirmation(slot, sid, serial) for slot, sid, serial
                         in (("usb:1-4", "s9", "SER1"), ("usb:1-5", "s10", "SER2"),
                             ("usb:1-6", "s11", "SER3"))]
        out = io.StringIO()
        with redirect_stdout(out):
            code = await asyncio.to_thread(cli.cmd_confirm,
                                           _args(socket=sock, slots=["usb:1-4", "usb:1-5"]))
        assert code == 0, out.getvalue()
        assert [c.answer.done() for c in confirmations] == [True, True, False]
        assert confirmations[0].answer.result() == "j.smith"
        with redirect_stdout(io.StringIO()):
            assert await asyncio.to_thread(cli.cmd_confirm, _args(socket=sock, all=True)) == 0
        assert confirmations[2].answer.result() == "j.smith"
        # Every action is in the audit trail with the operator's name.
        audit = await client.call("GET", "/audit", params={"action": "confirm"})
        assert sorted((e["slot"], e["operator"], e["result"]) for e in audit["entries"]) == [
            ("usb:1-4", "j.smith", "ok"), ("usb:1-4", "j.smith", "refused"),
            ("usb:1-5", "j.smith", "ok"), ("usb:1-6", "j.smith", "ok")]
        signins = await client.call("GET", "/audit", params={"action": "sign_in"})
        assert [e["result"] for e in signins["entries"]] == ["ok", "refused"]
    # No agent at all: exit 2 (unreachable).
    assert await asyncio.to_thread(
        cli.cmd_status, _args(socket=str(tmp_path / "none.sock"), once=True)) == 2


def test_cli_socket_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIPEAGENT_CONTROL_SOCKET", raising=False)
    config = tmp_path / "agent.toml"
    config.write_text('[control]\nsocket = "/tmp/x/control.sock"\n')
    assert cli.socket_path(_args(config=str(config))) == Path("/tmp/x/control.sock")
    assert cli.socket_path(_args(socket="/s", config=str(config))) == Path("/s")
    monkeypatch.setenv("WIPEAGENT_CONTROL_SOCKET", "/e")
    assert cli.socket_path(_args(config=str(config))) == Path("/e")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["confirm", "usb:1-3", "--socket", "/s"])
    assert args.func is cli.cmd_confirm and args.slots == ["usb:1-3"]


def test_status_lines_never_interpret_phone_text() -> None:
    status = {"station_id": "b", "policy": "confirm", "operator": None, "slots": [{
        "slot": "usb:1", "phone": {"manufacturer": "[bold red]Evil", "model": "[/]x",
                                   "serial": "S"},
        "step": "verify", "progress": 0.5, "message": "[link=http://x]y[/link]",
        "outcome": None, "running": True, "state": "working", "need": ""}]}
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(
        cli.render_status(status, translator("en")))
    text = buffer.getvalue()
    assert "[bold red]Evil [/]x S" in text
    assert "verifying on the phone 50%" in text


def test_openapi_document_lists_every_route(tmp_path: Path) -> None:
    """docs/openapi-control.yaml and the server's routes stay in step."""
    doc = (Path(__file__).parents[2] / "docs" / "openapi-control.yaml").read_text()
    documented: set[tuple[str, str]] = set()
    path = None
    for line in doc.splitlines():
        if line.startswith("  /"):
            path = line.strip().rstrip(":")
        elif path and line.startswith("    ") and line.strip().rstrip(":") in (
                "get", "post", "delete"):
            documented.add((line.strip().rstrip(":").upper(), path))
        elif not line.startswith(" "):
            path = None
    server = ControlServer(BenchState(Clock(50)), Store(tmp_path / "j"), AgentConfig(),
                           trust_roots=[])
    routes = {(r.method, r.resource.canonical) for r in server.app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    assert routes == documented
