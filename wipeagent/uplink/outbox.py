"""The outbox: every certificate in the journal that has no delivery receipt yet.

There is no second copy of a certificate to diverge from the journal: the outbox is a
view, `certificates LEFT JOIN deliveries`, and the `deliveries` table only records what
happened to each delivery (state, attempts, when to try next, the last error, the
platform's receipt). A certificate without a `deliveries` row is pending and due now, so a
certificate committed a moment before a crash is delivered after the restart.

States: `pending` (to be sent; `next_attempt_at` says when), `delivered` (the platform
answered 200/201 with a matching receipt), `parked` (the platform refused it for good, a
4xx other than 408/429; kept with its reason until a technician retries it).

Times in `next_attempt_at` are wall-clock UTC (ISO 8601), so a restart hours later still
knows what is due. Every call goes through `Store.run` (the journal's one thread).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from wipeagent.store import Store

DeliveryState = Literal["pending", "delivered", "parked"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    certificate_id TEXT PRIMARY KEY REFERENCES certificates(certificate_id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'parked')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT,
    receipt TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state, next_attempt_at);
"""

# Errors and receipts come from the network: stored bounded, never trusted as markup.
MAX_ERROR_CHARS = 500
MAX_RECEIPT_CHARS = 4000


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def clean_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """One printable line of at most `limit` characters (control characters replaced)."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned[:limit]


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


_ITEM_SELECT = """
SELECT c.certificate_id, c.station_id, c.sequence, c.sha256, c.data, c.created_at,
       COALESCE(d.state, 'pending'), COALESCE(d.attempts, 0), d.next_attempt_at, d.last_error
FROM certificates c LEFT JOIN deliveries d ON d.certificate_id = c.certificate_id
"""


def _item(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(
        certificate_id=row[0], station_id=row[1], sequence=row[2], sha256=row[3],
        data=bytes(row[4]), created_at=row[5], state=row[6], attempts=row[7],
        next_attempt_at=datetime.fromisoformat(row[8]) if row[8] else None,
        last_error=row[9],
    )


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the deliveries table if it is missing (idempotent)."""
    db.executescript(SCHEMA)


def list_items(db: sqlite3.Connection, *, include_delivered: bool = False) -> list[OutboxItem]:
    """Pending and parked certificates (optionally delivered ones too), oldest first."""
    where = "" if include_delivered else " WHERE COALESCE(d.state, 'pending') != 'delivered'"
    rows = db.execute(
        _ITEM_SELECT + where + " ORDER BY c.created_at, c.station_id, c.sequence"
    ).fetchall()
    return [_item(r) for r in rows]


def count_items(db: sqlite3.Connection) -> OutboxCounts:
    """Counts per delivery state."""
    rows = dict(db.execute(
        "SELECT COALESCE(d.state, 'pending'), COUNT(*) FROM certificates c"
        " LEFT JOIN deliveries d ON d.certificate_id = c.certificate_id"
        " GROUP BY COALESCE(d.state, 'pending')"
    ).fetchall())
    return OutboxCounts(rows.get("pending", 0), rows.get("parked", 0), rows.get("delivered", 0))


class Outbox:
    """Delivery bookkeeping over the journal (`Store`). Call `open()` once first."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def open(self) -> Outbox:
        """Create the deliveries table if needed."""
        await self.store.run(ensure_schema)
        return self

    async def next_due(self, now: datetime) -> tuple[OutboxItem | None, datetime | None]:
        """The oldest pending certificate due at `now`, else the time the next one is due.

        Returns (item, None) when one is due, (None, when) when the earliest pending one
        is due later, (None, None) when nothing is pending.
        """
        stamp = _iso(now)

        def read(db: sqlite3.Connection) -> tuple[OutboxItem | None, datetime | None]:
            row = db.execute(
                _ITEM_SELECT
                + " WHERE d.state IS NULL OR (d.state = 'pending'"
                " AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?))"
                " ORDER BY c.created_at, c.station_id, c.sequence LIMIT 1",
                (stamp,),
            ).fetchone()
            if row is not None:
                return _item(row), None
            later = db.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'"
            ).fetchone()[0]
            return None, datetime.fromisoformat(later) if later else None

        return await self.store.run(read)

    async def items(self, *, include_delivered: bool = False) -> list[OutboxItem]:
        """Pending and parked certificates, oldest first."""
        return await self.store.run(
            lambda db: list_items(db, include_delivered=include_delivered)
        )

    async def counts(self) -> OutboxCounts:
        """Counts per state (for metrics and the status display)."""
        return await self.store.run(count_items)

    async def _upsert(
        self,
        certificate_id: str,
        state: DeliveryState,
        *,
        next_attempt_at: datetime | None,
        error: str | None,
        receipt: dict[str, Any] | None,
        count_attempt: bool,
    ) -> None:
        receipt_text = (
            clean_text(json.dumps(receipt, sort_keys=True), MAX_RECEIPT_CHARS)
            if receipt is not None else None
        )
        error_text = clean_text(error) if error is not None else None
        next_text = _iso(next_attempt_at) if next_attempt_at else None
        now = _iso(datetime.now(UTC))

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO deliveries (certificate_id, state, attempts, next_attempt_at,"
                " last_error, receipt, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (certificate_id) DO UPDATE SET state = excluded.state,"
                " attempts = deliveries.attempts + ?, next_attempt_at = excluded.next_attempt_at,"
                " last_error = COALESCE(excluded.last_error, deliveries.last_error),"
                " receipt = COALESCE(excluded.receipt, deliveries.receipt),"
                " updated_at = excluded.updated_at",
                (certificate_id, state, int(count_attempt), next_text, error_text,
                 receipt_text, now, int(count_attempt)),
            )
            db.execute("COMMIT")

        await self.store.run(write)

    async def mark_delivered(self, certificate_id: str, receipt: dict[str, Any]) -> None:
        """The platform holds the certificate; keep its receipt."""
        await self._upsert(certificate_id, "delivered", next_attempt_at=None, error=None,
                           receipt=receipt, count_attempt=True)

    async def mark_retry(self, certificate_id: str, error: str, at: datetime) -> None:
        """A transient failure: try again at `at`."""
        await self._upsert(certificate_id, "pending", next_attempt_at=at, error=error,
                           receipt=None, count_attempt=True)

    async def mark_parked(self, certificate_id: str, reason: str) -> None:
        """A permanent refusal: stop sending it until a technician retries it."""
        await self._upsert(certificate_id, "parked", next_attempt_at=None, error=reason,
                           receipt=None, count_attempt=True)

    async def retry(self, certificate_id: str | None = None) -> int:
        """Move parked certificates (one, or all when None) back to pending, due now.

        Returns how many were moved. For use after the cause was fixed on the platform.
        """

        def write(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = NULL,"
                " updated_at = ? WHERE state = 'parked' AND (? IS NULL OR certificate_id = ?)",
                (_iso(datetime.now(UTC)), certificate_id, certificate_id),
            )
            db.execute("COMMIT")
            return cur.rowcount

        return await self.store.run(write)
