"""The outbox's bookkeeping: a row for every certificate from the transaction that stores
it, older journals brought up to date, and a pick that is an index seek (O(log n)) that
never reads the certificates it does not return."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from uplink_fixtures import Bench, make_bench

from wipeagent.store import Store
from wipeagent.uplink.outbox import (
    HEALTH_FAILING,
    HEALTH_OLDEST,
    NEXT_BATCH,
    NEXT_LATER,
    Outbox,
)


def plan(db: sqlite3.Connection, sql: str, *args: object) -> list[str]:
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args)]


async def test_pick_is_an_index_seek_never_a_scan(bench: Bench) -> None:
    await bench.issue(3)
    now = datetime.now(UTC).isoformat()
    steps = await bench.store.run(lambda db: plan(db, NEXT_BATCH, now, 64))
    later = await bench.store.run(lambda db: plan(db, NEXT_LATER))
    joined = " | ".join(steps + later)
    assert not any(step.startswith("SCAN") for step in steps + later), joined
    assert any("USING INDEX deliveries_due" in s for s in steps), joined
    assert any("USING" in s and "INDEX" in s and "certificate_id=?" in s
               for s in steps), joined  # the certificate by its primary key
    assert not any("TEMP B-TREE" in s for s in steps), joined  # no sort: index order
    assert any("deliveries_due" in s for s in later), joined
    # The alerts read the failing ones and the oldest pending one, not the backlog.
    for sql, args, index in ((HEALTH_FAILING, (3,), "deliveries_failing"),
                             (HEALTH_OLDEST, (), "deliveries_pending_age")):
        steps = await bench.store.run(lambda db, sql=sql, args=args: plan(db, sql, *args))
        assert any(index in s for s in steps) and not any(
            s.startswith("SCAN") for s in steps), steps


async def test_every_certificate_is_queued_in_its_own_transaction(bench: Bench) -> None:
    rows = await bench.issue(2)
    queued = await bench.store.run(lambda db: db.execute(
        "SELECT d.certificate_id, d.state, d.next_attempt_at, c.created_at"
        " FROM deliveries d JOIN certificates c USING (certificate_id)"
        " ORDER BY c.sequence").fetchall())
    assert [q[0] for q in queued] == [r.certificate_id for r in rows]
    assert all(q[1] == "pending" and q[2] == q[3] for q in queued)  # due from creation


async def test_earliest_due_first_and_batches(bench: Bench) -> None:
    a, b, c = await bench.issue(3)
    outbox = Outbox(bench.store)
    now = datetime.now(UTC)
    await outbox.mark_retry(a.certificate_id, "HTTP 503", now + timedelta(minutes=1))
    items, later = await outbox.next_batch(now, 64)
    assert [i.certificate_id for i in items] == [b.certificate_id, c.certificate_id]
    assert later is None and items[0].data == b.data
    items, _ = await outbox.next_batch(now, 1)
    assert [i.certificate_id for i in items] == [b.certificate_id]
    items, _ = await outbox.next_batch(now + timedelta(minutes=2), 64)
    assert [i.certificate_id for i in items] == [b.certificate_id, c.certificate_id,
                                                 a.certificate_id]
    await outbox.mark_delivered_many([])
    from wipeagent.uplink.outbox import Receipt

    await outbox.mark_delivered_many([Receipt(b.certificate_id, {"status": 201}),
                                      Receipt(c.certificate_id, {"status": 200})])
    items, later = await outbox.next_batch(now, 64)
    assert items == [] and later is not None
    assert abs((later - (now + timedelta(minutes=1))).total_seconds()) < 1


async def test_an_older_journal_is_brought_up_to_date(tmp_path: Path) -> None:
    """A journal written before the outbox kept a row per certificate (and before the
    failure columns): every certificate without a row is queued, due at its creation."""
    journal = tmp_path / "journal.sqlite3"
    async with Store(journal) as store:
        rows = await make_bench(tmp_path, store).issue(3)
    db = sqlite3.connect(journal)
    db.executescript("""
        DROP TRIGGER certificates_outbox_v2;
        DROP INDEX deliveries_due;
        DROP INDEX deliveries_pending_age;
        DROP INDEX deliveries_failing;
        DROP TABLE deliveries;
        CREATE TABLE deliveries (
            certificate_id TEXT PRIMARY KEY REFERENCES certificates(certificate_id),
            state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT, last_error TEXT, receipt TEXT, updated_at TEXT NOT NULL);
    """)
    db.execute("INSERT INTO deliveries (certificate_id, state, attempts, receipt, updated_at)"
               " VALUES (?, 'delivered', 1, '{}', '2026-01-01')", (rows[0].certificate_id,))
    db.execute("INSERT INTO deliveries (certificate_id, state, attempts, updated_at)"
               " VALUES (?, 'pending', 2, '2026-01-02T00:00:00.000000+00:00')",
               (rows[1].certificate_id,))  # re-queued by an old agent: no time
    db.commit()
    db.close()
    async with Store(journal) as store:
        outbox = Outbox(store)
        items, _ = await outbox.next_batch(datetime.now(UTC), 64)
        assert [i.certificate_id for i in items] == [rows[1].certificate_id,
                                                     rows[2].certificate_id]
        assert items[0].attempts == 2 and items[0].failures == 0
        health = await outbox.health(failing_after=1)
        assert health.oldest_pending is not None
        assert health.oldest_pending.isoformat(timespec="microseconds") == rows[1].created_at
        counts = await outbox.counts()
        assert (counts.pending, counts.delivered) == (2, 1)
        again = make_bench(tmp_path, store)
        again.issued = 3
        (new,) = await again.issue(1)  # the trigger is back
        items, _ = await outbox.next_batch(datetime.now(UTC), 64)
        assert new.certificate_id in {i.certificate_id for i in items}
