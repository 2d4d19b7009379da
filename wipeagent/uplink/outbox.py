"""The outbox: every certificate in the journal that has no delivery receipt yet.

There is no second copy of a certificate to diverge from the journal: the `deliveries`
table holds one small row per certificate (no bytes) saying what happened to its delivery
(state, attempts, when to try next, the last error, the platform's receipt). The journal
adds that row in the very transaction that stores the certificate (a trigger, see
`wipeagent.store`), so a certificate committed a moment before a crash is delivered after
the restart.

States: `pending` (to be sent; `next_attempt_at` says when), `delivered` (the platform
answered 200/201 with a matching receipt), `parked` (the platform refused it for good, or
it kept failing while other certificates went through; kept with its reason until a
technician re-queues it: `wipeagent outbox requeue`).

Picking the next certificate is one seek in a partial index over the pending rows'
`next_attempt_at` (`deliveries_due`), then one primary-key read of the certificate's
bytes: O(log n) whatever the backlog, and never a scan of the certificates.

Times in `next_attempt_at` are wall-clock UTC (ISO 8601, the journal's own format), so a
restart hours later still knows what is due. Every call goes through `Store.run` (the
journal's one thread).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from wipeagent.store import Store

DeliveryState = Literal["pending", "delivered", "parked"]

# Errors and receipts come from the network: stored bounded, never trusted as markup.
MAX_ERROR_CHARS = 500
MAX_RECEIPT_CHARS = 4000


def iso(t: datetime) -> str:
    """A wall-clock time as the journal writes it (UTC, microseconds, +00:00)."""
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def clean_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """One printable line of at most `limit` characters (control characters replaced)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    return text[:limit]


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class OutboxItem:
    """A certificate that still has to reach the platform (or was refused by it)."""

    certificate_id: str
    station_id: str
    sequence: int
    sha256: str
    data: bytes
    created_at: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    # Failed attempts in a row that were this certificate's own (the platform answered
    # badly or not at all); a platform that cannot be reached does not count.
    failures: int = 0
    failing_since: datetime | None = None

    def due(self, now: datetime) -> bool:
        """Whether a pending item may be attempted at `now`."""
        return self.state == "pending" and (
            self.next_attempt_at is None or self.next_attempt_at <= now
        )


@dataclass(frozen=True)
class OutboxCounts:
    """How many certificates are in each delivery state (pending includes never tried)."""

    pending: int
    parked: int
    delivered: int

    @property
    def depth(self) -> int:
        """Certificates not yet delivered (pending + parked)."""
        return self.pending + self.parked


@dataclass(frozen=True)
class OutboxHealth:
    """What the alerts are made of (see wipeagent.uplink.alerts)."""

    counts: OutboxCounts
    failing: int  # pending certificates with at least `failing_after` failures in a row
    failing_since: datetime | None  # the earliest of those failure runs
    oldest_pending: datetime | None  # creation time of the oldest pending certificate
    parked: tuple[OutboxItem, ...]  # the first few parked ones (no bytes), oldest first


# Listing (not the hot path) reads `certificates LEFT JOIN deliveries`, so it also works on
# a journal file that an older agent wrote (read-only, `wipeagent outbox list`).
_META_COLUMNS = """COALESCE(d.state, 'pending'), COALESCE(d.attempts, 0), d.next_attempt_at,
       d.last_error, COALESCE(d.failures, 0), d.failing_since"""
_ITEM_COLUMNS = ("c.certificate_id, c.station_id, c.sequence, c.sha256, c.data, c.created_at, "
                 + _META_COLUMNS)
# The same without the certificate's bytes (an empty blob in their place).
_BRIEF_COLUMNS = ("c.certificate_id, c.station_id, c.sequence, c.sha256, X'', c.created_at, "
                  + _META_COLUMNS)
_ITEM_SELECT = ("SELECT " + _ITEM_COLUMNS  # noqa: S608 - constant columns
                + " FROM certificates c LEFT JOIN deliveries d"
                " ON d.certificate_id = c.certificate_id")


def _item(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(
        certificate_id=row[0], station_id=row[1], sequence=row[2], sha256=row[3],
        data=bytes(row[4]), created_at=row[5], state=row[6], attempts=row[7],
        next_attempt_at=_when(row[8]), last_error=row[9], failures=row[10],
        failing_since=_when(row[11]),
    )


def list_items(db: sqlite3.Connection, *, include_delivered: bool = False,
               states: Sequence[DeliveryState] = ()) -> list[OutboxItem]:
    """Pending and parked certificates (optionally delivered ones too, or only `states`),
    oldest first."""
    if states:
        where = " WHERE COALESCE(d.state, 'pending') IN ({})".format(
            ", ".join("?" * len(states)))
    elif include_delivered:
        where = ""
    else:
        where = " WHERE COALESCE(d.state, 'pending') != 'delivered'"
    rows = db.execute(
        _ITEM_SELECT + where + " ORDER BY c.created_at, c.station_id, c.sequence",
        tuple(states),
    ).fetchall()
    return [_item(r) for r in rows]


def count_items(db: sqlite3.Connection) -> OutboxCounts:
    """Counts per delivery state (a certificate without a deliveries row is pending)."""
    rows = dict(db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
    (total,) = db.execute("SELECT COUNT(*) FROM certificates").fetchone()
    parked, delivered = rows.get("parked", 0), rows.get("delivered", 0)
    return OutboxCounts(total - parked - delivered, parked, delivered)


# The hot path: a range of the partial index over pending rows, then a primary-key read of
# each certificate (INDEXED BY makes SQLite fail loudly rather than fall back to a scan).
NEXT_BATCH = (
    "SELECT " + _ITEM_COLUMNS  # noqa: S608 - constant columns
    + " FROM deliveries d INDEXED BY deliveries_due"
    " JOIN certificates c ON c.certificate_id = d.certificate_id"
    " WHERE d.state = 'pending' AND d.next_attempt_at <= ?"
    " ORDER BY d.next_attempt_at LIMIT ?"
)
NEXT_LATER = ("SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due"
              " WHERE state = 'pending'")


def next_batch(db: sqlite3.Connection, now: datetime, limit: int
               ) -> tuple[list[OutboxItem], datetime | None]:
    """Up to `limit` pending certificates due at `now`, earliest due first; when none is
    due, the time the next one will be (None: nothing pending). Index seeks only."""
    rows = db.execute(NEXT_BATCH, (iso(now), limit)).fetchall()
    if rows:
        return [_item(r) for r in rows], None
    (later,) = db.execute(NEXT_LATER).fetchone()
    return [], _when(later)


# Alerts read only what they need through partial indexes: the failing ones (usually none)
# and the oldest pending one; never the whole backlog.
HEALTH_FAILING = ("SELECT COUNT(*), MIN(failing_since) FROM deliveries INDEXED BY"
                  " deliveries_failing WHERE state = 'pending' AND failures > 0"
                  " AND failures >= ?")
HEALTH_OLDEST = ("SELECT MIN(created_at) FROM deliveries INDEXED BY deliveries_pending_age"
                 " WHERE state = 'pending'")


def health(db: sqlite3.Connection, *, failing_after: int, parked_limit: int = 20
           ) -> OutboxHealth:
    """Counts, certificates failing in a row, the oldest pending one, the parked ones."""
    counts = count_items(db)
    failing, since = db.execute(HEALTH_FAILING, (failing_after,)).fetchone()
    (oldest,) = db.execute(HEALTH_OLDEST).fetchone()
    parked = db.execute(
        "SELECT " + _BRIEF_COLUMNS  # noqa: S608 - constant columns
        + " FROM deliveries d JOIN certificates c ON c.certificate_id = d.certificate_id"
        " WHERE d.state = 'parked' ORDER BY c.created_at LIMIT ?", (parked_limit,)
    ).fetchall()
    return OutboxHealth(counts, failing, _when(since), _when(oldest),
                        tuple(_item(r) for r in parked))


@dataclass(frozen=True)
class Receipt:
    """A delivery to journal: the certificate and the platform's receipt."""

    certificate_id: str
    receipt: dict[str, Any]


class Outbox:
    """Delivery bookkeeping over the journal (`Store`; its schema holds the table)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def open(self) -> Outbox:
        """Kept for callers that open explicitly: the journal creates the table itself."""
        return self

    async def next_batch(self, now: datetime, limit: int
                         ) -> tuple[list[OutboxItem], datetime | None]:
        """Up to `limit` certificates due at `now` (see `next_batch`)."""
        return await self.store.run(lambda db: next_batch(db, now, limit))

    async def next_due(self, now: datetime) -> tuple[OutboxItem | None, datetime | None]:
        """The pending certificate due first at `now`, else the time the next one is due.

        Returns (item, None) when one is due, (None, when) when the earliest pending one
        is due later, (None, None) when nothing is pending.
        """
        items, later = await self.next_batch(now, 1)
        return (items[0], None) if items else (None, later)

    async def items(self, *, include_delivered: bool = False) -> list[OutboxItem]:
        """Pending and parked certificates, oldest first."""
        return await self.store.run(
            lambda db: list_items(db, include_delivered=include_delivered)
        )

    async def counts(self) -> OutboxCounts:
        """Counts per state (for metrics and the status display)."""
        return await self.store.run(count_items)

    async def health(self, *, failing_after: int) -> OutboxHealth:
        """What the delivery alerts need (one short read)."""
        return await self.store.run(lambda db: health(db, failing_after=failing_after))

    async def mark_delivered(self, certificate_id: str, receipt: dict[str, Any]) -> None:
        """The platform holds the certificate; keep its receipt."""
        await self.mark_delivered_many([Receipt(certificate_id, receipt)])

    async def mark_delivered_many(self, receipts: Sequence[Receipt]) -> None:
        """Journal several receipts in one transaction (one fsync for all of them)."""
        now = iso(datetime.now(UTC))
        rows = [(clean_text(json.dumps(r.receipt, sort_keys=True), MAX_RECEIPT_CHARS), now,
                 r.certificate_id) for r in receipts]

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1,"
                " next_attempt_at = NULL, receipt = ?, updated_at = ?, failures = 0,"
                " failing_since = NULL WHERE certificate_id = ?", rows)
            db.execute("COMMIT")

        if rows:
            await self.store.run(write)

    async def mark_retry(self, certificate_id: str, error: str, at: datetime, *,
                         own_failure: bool = True) -> None:
        """A transient failure: try again at `at`. `own_failure`: the failure counts
        against this certificate (False when the platform could not even be reached)."""
        now = iso(datetime.now(UTC))
        args = (iso(at), clean_text(error), now, int(own_failure), int(own_failure), now,
                certificate_id)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE deliveries SET state = 'pending', attempts = attempts + 1,"
                " next_attempt_at = ?, last_error = ?, updated_at = ?,"
                " failures = failures + ?,"
                " failing_since = CASE WHEN ? THEN COALESCE(failing_since, ?)"
                " ELSE failing_since END WHERE certificate_id = ?", args)
            db.execute("COMMIT")

        await self.store.run(write)

    async def mark_parked(self, certificate_id: str, reason: str, *,
                          own_failure: bool = False) -> None:
        """Stop sending it until a technician re-queues it, keeping `reason`."""
        now = iso(datetime.now(UTC))
        args = (clean_text(reason), now, int(own_failure), certificate_id)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE deliveries SET state = 'parked', attempts = attempts + 1,"
                " next_attempt_at = NULL, last_error = ?, updated_at = ?,"
                " failures = failures + ? WHERE certificate_id = ?", args)
            db.execute("COMMIT")

        await self.store.run(write)

    async def requeue(self, certificate_id: str | None = None) -> int:
        """Make parked certificates (one by id, or all when None) pending and due now,
        their failure count reset; a pending certificate named by id is made due now.

        Returns how many were re-queued. For use once the cause was fixed.
        """
        now = iso(datetime.now(UTC))

        def write(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?,"
                " failures = 0, failing_since = NULL, updated_at = ?"
                " WHERE (? IS NULL AND state = 'parked')"
                " OR (certificate_id = ? AND state != 'delivered')",
                (now, now, certificate_id, certificate_id),
            )
            db.execute("COMMIT")
            return cur.rowcount

        return await self.store.run(write)
