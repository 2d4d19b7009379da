"""The control audit trail: every technician action and every sign-in attempt, with the
operator's name, in the journal database (table `control_audit`, through `Store.run`).

Sessions journal their own steps (`confirmed`, `booked_in` ...); this table records what
people did at the bench, including what was refused (a wrong PIN, a request without a
valid CSRF token), so an auditor can answer "who confirmed this erase, from where, and
who tried to sign in as them".
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wipeagent.errors import StoreError
from wipeagent.store import Store

log = logging.getLogger(__name__)

_TABLE = """
CREATE TABLE IF NOT EXISTS control_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    operator TEXT,
    channel TEXT NOT NULL,
    remote TEXT NOT NULL DEFAULT '',
    slot TEXT,
    session_id TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
)
"""


@dataclass(frozen=True)
class AuditEntry:
    at: str
    action: str  # sign_in, sign_out, confirm, abort, manual_step, identify, intake ...
    result: str  # ok, refused, failed
    operator: str | None
    channel: str  # socket, web
    remote: str
    slot: str | None
    session_id: str | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "action": self.action, "result": self.result,
                "operator": self.operator, "channel": self.channel, "remote": self.remote,
                "slot": self.slot, "session_id": self.session_id, "detail": self.detail}


class AuditLog:
    """Append-only; a failing write is logged, never raised into the action (the action
    itself is journaled by the session where it matters, e.g. `confirmed`)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ready = False

    async def record(self, action: str, result: str, *, operator: str | None,
                     channel: str, remote: str = "", slot: str | None = None,
                     session_id: str | None = None, **detail: Any) -> None:
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        row = (at, action, result, operator, channel, remote[:100], slot, session_id,
               json.dumps(detail, sort_keys=True, default=str)[:4000])

        def write(db: sqlite3.Connection) -> None:
            if not self._ready:
                db.execute(_TABLE)
                self._ready = True
            db.execute("INSERT INTO control_audit (at, action, result, operator, channel,"
                       " remote, slot, session_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       row)

        log.info("audit: %s %s by %s via %s%s%s", action, result, operator or "-", channel,
                 f" on {slot}" if slot else "", f" {detail}" if detail else "")
        try:
            await self.store.run(write)
        except StoreError as exc:
            log.error("could not journal %s by %s: %s", action, operator, exc)

    async def entries(self, limit: int = 200, action: str | None = None) -> list[AuditEntry]:
        """The newest entries first."""

        def read(db: sqlite3.Connection) -> list[AuditEntry]:
            db.execute(_TABLE)
            rows = db.execute(
                "SELECT at, action, result, operator, channel, remote, slot, session_id,"
                " detail FROM control_audit WHERE (? IS NULL OR action = ?)"
                " ORDER BY id DESC LIMIT ?", (action, action, limit)).fetchall()
            return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                               json.loads(r[8])) for r in rows]

        return await self.store.run(read)
