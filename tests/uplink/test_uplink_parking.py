"""No single certificate can block delivery: a certificate the platform keeps failing is
retried on its own back-off and parked after the limit, with alerts in status, metrics
and the log, while the others are delivered; `wipeagent outbox requeue` sends it again.
A platform outage, by contrast, parks nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from uplink_fixtures import Bench, eventually

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, ControlConfig, UplinkConfig
from wipeagent.control import cli as control_cli
from wipeagent.control.bench import BenchState
from wipeagent.control.client import ControlClient
from wipeagent.control.server import ControlServer
from wipeagent.i18n import translator
from wipeagent.metrics import Metrics
from wipeagent.uplink.cli import cmd_outbox, register
from wipeagent.uplink.client import Uplink, UplinkSettings
from wipeagent.uplink.receiver import Receiver

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refusing(Receiver):
    """The reference receiver, except that it answers `status` for the certificates in
    `refuse` (by Idempotency-Key) for as long as they are in it."""

    def __init__(self, *args: object, refuse: set[str], status: int = 503,
                 **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.refuse = refuse
        self.status = status
        self.refused = 0

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.headers.get("Idempotency-Key") in self.refuse:
                self.refused += 1
                return web.json_response({"error": "unavailable", "message": "try later"},
                                         status=self.status)
            return await handler(request)

        app.middlewares.append(refuse)
        return app


def refusing(bench: Bench, refuse: set[str], status: int = 503) -> Refusing:
    return Refusing(bench.root / "received", bench.trust, ssl_context=bench.server_ssl,
                    clock=bench.clock, refuse=refuse, status=status)


def settings(url: str, **kw: float) -> UplinkSettings:
    values: dict[str, float] = {"timeout_s": 20.0, "backoff_initial_s": 2.0,
                                "backoff_max_s": 20.0, "poll_interval_s": 5.0,
                                "park_after_failures": 4, "alert_after_failures": 2}
    values.update(kw)
    return UplinkSettings(url=url, **values)  # type: ignore[arg-type]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_one_refused_certificate_never_blocks_the_others(
        bench: Bench, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    rows = await bench.issue(11)
    poison = rows[0]  # the oldest: first in line, as in the issue
    metrics = Metrics(bench.clock, bench.store)
    caplog.set_level(logging.WARNING, logger="wipeagent.uplink.client")
    async with refusing(bench, {poison.certificate_id}) as receiver:
        uplink = Uplink(bench.store, bench.clock, settings(receiver.url), bench.client_ssl,
                        recorder=metrics)
        task = asyncio.create_task(uplink.run())
        try:
            # Every other certificate goes through while the first keeps failing.
            await eventually(lambda: len(receiver.created) == 10)
            assert poison.certificate_id not in receiver.created
            # ... and after the limit the refused one is parked, with its reason.
            await eventually(lambda: receiver.refused >= 4)
            status = await _until(uplink, lambda s: s.health.counts.parked == 1)
        finally:
            await stop(task)
    assert receiver.refused == 4  # exactly park_after_failures attempts, then no more
    assert status.health.counts.pending == 0 and status.health.counts.delivered == 10
    assert [i.certificate_id for i in status.health.parked] == [poison.certificate_id]
    reason = status.health.parked[0].last_error or ""
    assert "gave up after 4 failed attempts" in reason and "HTTP 503" in reason
    codes = {a.code: a for a in status.alerts}
    assert codes["certificates_parked"].level == "error"
    assert "wipeagent outbox requeue" in codes["certificates_parked"].hint
    assert "platform_failing" not in codes  # the platform works
    # The log says it, and the metrics carry it.
    assert any("parked" in r.getMessage() and poison.certificate_id in r.getMessage()
               and r.levelno == logging.ERROR for r in caplog.records)
    await metrics.refresh(status)
    text = metrics.render()
    assert 'wipeagent_delivery_alert{alert="certificates_parked"} 1.0' in text
    assert 'wipeagent_outbox_certificates{state="parked"} 1.0' in text
    assert 'wipeagent_uploads_total{reason="gave_up",result="parked"} 1.0' in text
    # `wipeagent outbox list` shows it; `requeue ID` sends it again once the cause is gone.
    state_dir = str(bench.store.path.parent)
    assert await asyncio.to_thread(cmd_outbox, parse(["outbox", "list", "--state-dir",
                                                      state_dir])) == 0
    out = capsys.readouterr().out
    assert f"parked    {poison.certificate_id}" in out and "requeue" in out
    assert await asyncio.to_thread(cmd_outbox, parse(
        ["outbox", "requeue", poison.certificate_id, "--state-dir", state_dir])) == 0
    assert "1 certificate(s) re-queued" in capsys.readouterr().out
    async with refusing(bench, set()) as receiver:
        uplink = Uplink(bench.store, bench.clock, settings(receiver.url), bench.client_ssl)
        await asyncio.wait_for(uplink.run(until_idle=True), 10)
        assert set(receiver.created) == {poison.certificate_id}
    report = await uplink.report()
    assert (report.delivered, report.parked, report.pending) == (11, 0, 0)
    assert not (await uplink.status()).alerts


async def _until(uplink: Uplink, predicate: Callable[..., bool]) -> object:
    async with asyncio.timeout(10):
        while True:
            status = await uplink.status()
            if predicate(status):
                return status
            await asyncio.sleep(0.01)


async def test_a_failing_certificate_has_its_own_back_off(bench: Bench) -> None:
    """While one certificate fails, new ones are delivered at once, not after it."""
    (poison,) = await bench.issue(1)
    async with refusing(bench, {poison.certificate_id}) as receiver:
        # Long per-certificate back-off; short link rest.
        uplink = Uplink(bench.store, bench.clock,
                        settings(receiver.url, backoff_initial_s=1.0, backoff_max_s=10_000,
                                 park_after_failures=100),
                        bench.client_ssl)
        task = asyncio.create_task(uplink.run())
        try:
            await eventually(lambda: receiver.refused >= 6)  # 1, 2, 4 ... bench s apart
            (fresh,) = await bench.issue(1)
            uplink.wake()
            await eventually(lambda: fresh.certificate_id in receiver.created)
            items = {i.certificate_id: i for i in await uplink.outbox.items()}
            assert items[poison.certificate_id].state == "pending"
            assert items[poison.certificate_id].failures >= 6
            status = await uplink.status()
            assert "certificates_failing" in {a.code for a in status.alerts}
        finally:
            await stop(task)


async def test_a_platform_outage_parks_nothing(bench: Bench) -> None:
    """503 for everything: nothing was delivered since the failures began, so however
    many failures pile up nothing is parked; the alerts say the platform is failing."""
    rows = await bench.issue(2)
    ids = {r.certificate_id for r in rows}
    async with refusing(bench, set(ids)) as receiver:
        uplink = Uplink(bench.store, bench.clock, settings(receiver.url, backoff_max_s=4),
                        bench.client_ssl)
        task = asyncio.create_task(uplink.run())
        try:
            await eventually(lambda: receiver.refused >= 14)
            status = await uplink.status()
            assert status.health.counts.parked == 0 and status.health.counts.pending == 2
            assert max(i.failures for i in await uplink.outbox.items()) >= 4  # > the limit
            assert {"platform_failing", "certificates_failing"} <= {
                a.code for a in status.alerts}
            receiver.refuse.clear()  # the platform is back
            await eventually(lambda: len(receiver.created) == 2)
            status = await _until(uplink, lambda s: s.health.counts.delivered == 2)
            assert not status.alerts  # type: ignore[attr-defined]
        finally:
            await stop(task)


async def test_an_unreachable_platform_is_not_the_certificates_fault(bench: Bench) -> None:
    await bench.issue(1)
    probe = await bench.receiver().start()
    port = probe.port
    await probe.stop()
    uplink = Uplink(bench.store, bench.clock,
                    settings(f"https://127.0.0.1:{port}/v1/certificates", backoff_max_s=4,
                             timeout_s=5000),  # a refused connect, never a slow one
                    bench.client_ssl)
    task = asyncio.create_task(uplink.run())
    try:
        await eventually(lambda: uplink.attempts >= 5)
    finally:
        await stop(task)
    (item,) = await uplink.outbox.items()
    assert item.state == "pending" and item.failures == 0 and item.attempts >= 4
    status = await uplink.status()
    assert [a.code for a in status.alerts] == ["platform_failing"]
    assert "connection" in (status.link.last_error or "")


async def test_status_api_and_cli_show_the_alerts(bench: Bench) -> None:
    rows = await bench.issue(2)
    await bench.store.run(lambda db: db.execute(
        "UPDATE deliveries SET state = 'parked', last_error = 'HTTP 422: bad_signature'"
        " WHERE certificate_id = ?", (rows[0].certificate_id,)))
    clock = Clock(50)
    with tempfile.TemporaryDirectory(prefix="wad-") as short:
        config = AgentConfig(state_dir=str(bench.root / "state"),
                             control=ControlConfig(socket=f"{short}/control.sock", group=""),
                             uplink=UplinkConfig(url=""))
        server = ControlServer(BenchState(clock, station_id="bench-01"), bench.store, config,
                               trust_roots=[])
        async with server, ControlClient(server.socket_path, clock=clock,
                                         timeout_s=600) as client:
            status = await client.status()
    delivery = status["delivery"]
    assert (delivery["pending"], delivery["parked"], delivery["delivered"]) == (1, 1, 0)
    assert delivery["parked_certificates"][0]["certificate_id"] == rows[0].certificate_id
    assert delivery["parked_certificates"][0]["reason"] == "HTTP 422: bad_signature"
    codes = [a["code"] for a in delivery["alerts"]]
    assert codes == ["certificates_parked", "uplink_not_configured"]
    json.dumps(status)  # plain JSON all the way
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(control_cli.render_status(status, translator("en")))
    text = console.export_text()
    assert "outbox: 1 pending, 1 parked, 0 delivered" in text
    assert "ERROR: 1 certificate(s) parked" in text


async def test_metrics_alerts_from_the_journal_alone(bench: Bench) -> None:
    rows = await bench.issue(3)
    await bench.store.run(lambda db: db.execute(
        "UPDATE deliveries SET failures = 5, failing_since = updated_at"
        " WHERE certificate_id = ?", (rows[1].certificate_id,)))
    metrics = Metrics(bench.clock, bench.store)
    await metrics.refresh()
    text = metrics.render()
    assert "wipeagent_outbox_failing 1.0" in text
    assert 'wipeagent_delivery_alert{alert="certificates_failing"} 1.0' in text
    assert 'wipeagent_delivery_alert{alert="certificates_parked"} 0.0' in text
    age = next(line for line in text.splitlines()
               if line.startswith("wipeagent_outbox_oldest_pending_age_seconds "))
    assert float(age.split()[1]) >= 0


def test_requeue_wants_an_id_or_all(tmp_path: Path) -> None:
    from wipeagent.errors import ConfigError

    with pytest.raises(ConfigError, match="id or --all"):
        cmd_outbox(parse(["outbox", "requeue", "--state-dir", str(tmp_path)]))
