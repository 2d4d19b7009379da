"""The uplink against the reference receiver, with the faults a real platform has.

Every test ends the same way: the receiver holds every certificate of the journal exactly
once, byte for byte, and the outbox is empty (or holds exactly the parked ones)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from datetime import UTC, datetime

import pytest
from uplink_fixtures import SPEED, Bench, eventually, record

from wipeagent.errors import StoreError
from wipeagent.metrics import Metrics
from wipeagent.uplink.client import Uplink, UplinkSettings, deliver_all, parse_retry_after
from wipeagent.uplink.receiver import Faults, Receiver


def fast(url: str, **kw: float) -> UplinkSettings:
    defaults = {"timeout_s": 20.0, "backoff_initial_s": 2.0, "backoff_max_s": 20.0,
                "poll_interval_s": 5.0}
    defaults.update(kw)
    return UplinkSettings(url=url, **defaults)


async def held_exactly_once(bench: Bench, receiver: Receiver) -> None:
    rows = await bench.store.certificates()
    held = receiver.held()
    assert set(held) == {r.certificate_id for r in rows}
    for row in rows:
        assert held[row.certificate_id] == row.data  # the exact journal bytes
        assert receiver.created[row.certificate_id] == 1
    assert all(n == 1 for n in receiver.created.values())


async def test_delivers_everything_with_receipts(bench: Bench) -> None:
    await bench.issue(3)
    async with bench.receiver() as receiver:
        report = await deliver_all(bench.store, url=receiver.url,
                                   ssl_context=bench.client_ssl, clock=bench.clock)
        assert (report.delivered, report.total, report.finished) == (3, 3, True)
        assert report.summary("the reference receiver") == (
            "delivered 3/3 certificates to the reference receiver")
        await held_exactly_once(bench, receiver)
    receipts = await bench.store.run(lambda db: db.execute(
        "SELECT d.receipt, c.sha256 FROM deliveries d JOIN certificates c USING (certificate_id)"
    ).fetchall())
    assert len(receipts) == 3
    for text, sha in receipts:
        assert json.loads(text)["sha256"] == sha
        assert json.loads(text)["status"] == 201


async def test_receiver_down_then_up(bench: Bench) -> None:
    await bench.issue(2)
    # Find a free port, then leave it closed: the platform is down.
    probe = await bench.receiver().start()
    port = probe.port
    await probe.stop()
    url = f"https://127.0.0.1:{port}/v1/certificates"
    uplink = Uplink(bench.store, bench.clock, fast(url), bench.client_ssl)
    task = asyncio.create_task(uplink.run())
    try:
        await eventually(lambda: uplink.attempts >= 3)
        items = await uplink.outbox.items()
        assert len(items) == 2 and all(i.state == "pending" for i in items)
        assert any("connection" in (i.last_error or "") for i in items)
        receiver = await bench.receiver().start("127.0.0.1", port)
        try:
            uplink.wake()
            await eventually(lambda: len(receiver.created) == 2)
            report = await _settled(uplink)
            assert report.delivered == 2
            await held_exactly_once(bench, receiver)
        finally:
            await receiver.stop()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _settled(uplink: Uplink) -> object:
    async with asyncio.timeout(10):
        while True:
            report = await uplink.report()
            if report.pending == 0:
                return report
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("status", [500, 503, 408])
async def test_transient_statuses_are_retried(bench: Bench, status: int) -> None:
    await bench.issue(2)
    metrics = Metrics(bench.clock, bench.store)
    faults = Faults(statuses=[(status, None), (status, None)])
    async with bench.receiver(faults=faults) as receiver:
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock, settings=fast(receiver.url),
                                   recorder=metrics)
        assert report.finished and report.delivered == 2
        assert report.attempts == 4
        await held_exactly_once(bench, receiver)
    text = metrics.render()
    assert f'wipeagent_upload_failures_total{{reason="http_{status}"}} 2.0' in text
    assert 'wipeagent_uploads_total{reason="created",result="delivered"} 2.0' in text


async def test_retry_after_is_honoured(bench: Bench) -> None:
    await bench.issue(1)
    faults = Faults(statuses=[(429, "40")])
    async with bench.receiver(faults=faults) as receiver:
        start = bench.clock.monotonic()
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock,
                                   settings=fast(receiver.url, backoff_initial_s=1.0))
        waited = bench.clock.monotonic() - start
        assert report.finished and report.attempts == 2
        # The back-off alone would have been at most 1 bench second; the two attempts say
        # it did not try in between. (No upper bound: a loaded machine only adds time.)
        assert waited >= 40
        await held_exactly_once(bench, receiver)


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now, speed=1, limit=1000) == 120
    assert parse_retry_after("99999999", now=now, speed=1, limit=1000) == 1000
    assert parse_retry_after("Sun, 22 Nov 2026 12:01:00 GMT", now=now, speed=1,
                             limit=1000) == 60
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:00 GMT", now=now, speed=1,
                             limit=1000) == 0
    assert parse_retry_after("soon", now=now, speed=1, limit=1000) is None
    assert parse_retry_after(None, now=now, speed=1, limit=1000) is None


async def test_backoff_grows_with_jitter_and_is_capped(bench: Bench) -> None:
    uplink = Uplink(bench.store, bench.clock,
                    UplinkSettings(url="https://127.0.0.1:1/v1/certificates",
                                   backoff_initial_s=4, backoff_max_s=60), bench.client_ssl)
    for n, ceiling in [(1, 4), (2, 8), (3, 16), (5, 60), (40, 60)]:
        delays = [uplink.backoff(n) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


async def test_permanent_refusal_is_parked_and_others_go_on(bench: Bench) -> None:
    rows = await bench.issue(3)
    # The platform cannot verify the middle one: a byte of its signature flipped.
    bad = rows[1]
    doc = json.loads(bad.data)
    sig = doc["signature"]
    doc["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    tampered = json.dumps(doc, separators=(",", ":")).encode()
    await bench.store.run(lambda db: db.execute(
        "UPDATE certificates SET data = ? WHERE certificate_id = ?",
        (tampered, bad.certificate_id)))
    faults = Faults(statuses=[(400, None)])  # and the first request is refused outright
    async with bench.receiver(faults=faults) as receiver:
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock, settings=fast(receiver.url))
        assert report.finished
        assert (report.delivered, report.parked) == (1, 2)
        items = {i.certificate_id: i for i in await _outbox(bench)}
        assert set(items) == {rows[0].certificate_id, bad.certificate_id}
        assert items[bad.certificate_id].state == "parked"
        assert "HTTP 422" in (items[bad.certificate_id].last_error or "")
        assert "bad_signature" in (items[bad.certificate_id].last_error or "")
        assert "HTTP 400" in (items[rows[0].certificate_id].last_error or "")
        assert set(receiver.held()) == {rows[2].certificate_id}
        # A technician retries the parked ones: the first goes through now.
        from wipeagent.uplink.outbox import Outbox

        assert await Outbox(bench.store).requeue() == 2
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock, settings=fast(receiver.url))
        assert (report.delivered, report.parked) == (2, 1)
        assert set(receiver.held()) == {rows[0].certificate_id, rows[2].certificate_id}


async def _outbox(bench: Bench) -> list:  # type: ignore[type-arg]
    from wipeagent.uplink.outbox import Outbox

    return await Outbox(bench.store).items()


@pytest.mark.parametrize("where", ["before_store", "after_store"])
async def test_connection_cut_mid_request(bench: Bench, where: str) -> None:
    await bench.issue(3)
    faults = (Faults(cut_before_store=2) if where == "before_store"
              else Faults(cut_after_store=2))
    async with bench.receiver(faults=faults) as receiver:
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock, settings=fast(receiver.url))
        assert report.finished and report.delivered == 3
        await held_exactly_once(bench, receiver)
        if where == "after_store":
            # The receiver had stored it; the repeat was answered idempotently.
            assert sum(receiver.duplicates.values()) == 2
        else:
            assert not receiver.duplicates


async def test_slow_receiver_times_out_and_retries(bench: Bench) -> None:
    await bench.issue(2)
    faults = Faults(delays=[500.0])  # first answer after 500 bench s; the client waits 20
    async with bench.receiver(faults=faults) as receiver:
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock, settings=fast(receiver.url))
        assert report.finished and report.delivered == 2
        await held_exactly_once(bench, receiver)
        assert sum(receiver.duplicates.values()) == 1
    items = await bench.store.run(lambda db: db.execute(
        "SELECT attempts FROM deliveries ORDER BY attempts").fetchall())
    assert [a for (a,) in items] == [1, 2]


async def test_uplink_cancelled_mid_upload_and_restarted(bench: Bench) -> None:
    await bench.issue(3)
    faults = Faults(delays=[10_000.0])  # the first request hangs until the agent dies
    async with bench.receiver(faults=faults) as receiver:
        uplink = Uplink(bench.store, bench.clock, fast(receiver.url, timeout_s=100_000),
                        bench.client_ssl)
        task = asyncio.create_task(uplink.run())
        await eventually(lambda: len(receiver.created) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await uplink.report()).delivered == 0  # the receipt never came
        # "Restart": a new Uplink over the same journal.
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock, settings=fast(receiver.url))
        assert report.finished and report.delivered == 3
        await held_exactly_once(bench, receiver)
        assert sum(receiver.duplicates.values()) == 1


async def test_disk_full_while_journaling(bench: Bench) -> None:
    """SQLite runs out of pages (PRAGMA max_page_count: a full disk to SQLite): issuing
    fails with StoreError, nothing committed is lost, deliveries whose receipts cannot be
    journaled are repeated, and everything goes through once space is back."""
    from wipeagent.uplink.outbox import Outbox

    await bench.issue(12)
    await Outbox(bench.store).open()

    def fill(db: sqlite3.Connection) -> int:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (limit,) = db.execute(f"PRAGMA max_page_count = {pages}").fetchone()
        return int(limit)

    assert await bench.store.run(fill) > 0
    with pytest.raises(StoreError, match="full"):
        await bench.issue(1)
    blocked = record(bench.issued)  # that session got no certificate (rolled back)
    assert len(await bench.store.certificates()) == 12  # nothing committed was lost
    async with bench.receiver() as receiver:
        uplink = Uplink(bench.store, bench.clock, fast(receiver.url), bench.client_ssl)
        task = asyncio.create_task(uplink.run())
        try:
            # The receiver gets certificates, but their receipts do not all fit.
            await eventually(lambda: receiver.requests >= 14)
            assert (await uplink.report()).pending > 0
            await bench.store.run(
                lambda db: db.execute("PRAGMA max_page_count = 1073741823").fetchone())
            await bench.certifier.certify(blocked)  # space is back: issued now
            uplink.wake()
            report = await _settled(uplink)
            assert report.delivered == 13  # type: ignore[attr-defined]
            await held_exactly_once(bench, receiver)
            assert sum(receiver.duplicates.values()) >= 1
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    # And every delivered certificate's receipt names its own hash.
    rows = await bench.store.run(lambda db: db.execute(
        "SELECT c.data, d.receipt FROM certificates c JOIN deliveries d USING (certificate_id)"
    ).fetchall())
    for data, receipt in rows:
        assert json.loads(receipt)["sha256"] == hashlib.sha256(data).hexdigest()


def test_speed_is_fast() -> None:
    assert SPEED >= 100  # keeps every back-off in these tests in the milliseconds
