"""The journal: SQLite in WAL mode holding sessions, their steps and the certificates.

Each step of a session is committed before the next one starts, so a crash, a power cut
or an unplugged phone resumes from what is written here. All SQLite calls run in one
dedicated worker thread: the asyncio loop never waits on fsync, and SQLite sees one
connection used from one thread.

Certificates are appended inside one transaction that also reads the station's chain head,
so two sessions finishing at the same moment can never get the same sequence number, and a
session can never get two certificates.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from wipeagent.errors import JournalDamaged, StoreError
from wipeagent.steps import JournalStep, SessionState

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    slot TEXT NOT NULL,
    serial TEXT,
    state TEXT NOT NULL,
    outcome TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_serial ON sessions(serial, state);
CREATE TABLE IF NOT EXISTS steps (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    data TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS certificates (
    certificate_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE REFERENCES sessions(id),
    station_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    previous_sha256 TEXT,
    outcome TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (station_id, sequence)
);
-- The outbox's bookkeeping (wipeagent/uplink/outbox.py): one small row per certificate,
-- without its bytes, added by the trigger below in the transaction that stores the
-- certificate, so no certificate can be committed without being queued for delivery.
-- The partial index on next_attempt_at makes "the next certificate due" one index seek.
CREATE TABLE IF NOT EXISTS deliveries (
    certificate_id TEXT PRIMARY KEY REFERENCES certificates(certificate_id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'parked')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT,
    receipt TEXT,
    updated_at TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    failing_since TEXT,
    created_at TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state, next_attempt_at);
-- Where a station's chain continues when the certificates that ended it are no longer in
-- this journal (it was rebuilt from the exported certificates and the chain-head record:
-- wipeagent/chainhead.py). The chain head is the higher of this and the certificates.
CREATE TABLE IF NOT EXISTS chain_floor (
    station_id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    sha256 TEXT
);
DROP TRIGGER IF EXISTS certificates_outbox;
CREATE TRIGGER IF NOT EXISTS certificates_outbox_v2 AFTER INSERT ON certificates BEGIN
    INSERT OR IGNORE INTO deliveries (certificate_id, state, next_attempt_at, updated_at,
                                      created_at)
    VALUES (NEW.certificate_id, 'pending', NEW.created_at, NEW.created_at, NEW.created_at);
END;
"""

# Columns added to `deliveries` after it first shipped: (name, declaration).
_DELIVERY_COLUMNS = (
    ("failures", "INTEGER NOT NULL DEFAULT 0"),
    ("failing_since", "TEXT"),
    ("created_at", "TEXT"),  # the certificate's, so its age is one index read away
)

# After the columns exist: the due index, and a row for every certificate stored before the
# trigger existed (due at its creation time; a pending row without a time is due now).
_OUTBOX_MIGRATION = """
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_pending_age ON deliveries(created_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_failing ON deliveries(failures)
    WHERE state = 'pending' AND failures > 0;
INSERT INTO deliveries (certificate_id, state, next_attempt_at, updated_at, created_at)
    SELECT c.certificate_id, 'pending', c.created_at, c.created_at, c.created_at
    FROM certificates c
    WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.certificate_id = c.certificate_id);
UPDATE deliveries SET next_attempt_at = updated_at
    WHERE state = 'pending' AND next_attempt_at IS NULL;
"""


def _migrate_outbox(db: sqlite3.Connection) -> None:
    """Bring an older journal's `deliveries` table up to date (idempotent, one transaction)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}
    for name, declaration in _DELIVERY_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE deliveries ADD COLUMN {name} {declaration}")
    if "created_at" not in have:  # once, when the column is new
        db.execute("UPDATE deliveries SET created_at = (SELECT c.created_at FROM certificates"
                   " c WHERE c.certificate_id = deliveries.certificate_id)")
    for statement in _OUTBOX_MIGRATION.split(";"):
        if statement.strip():
            db.execute(statement)


@dataclass(frozen=True)
class StepRow:
    seq: int
    step: str
    data: dict[str, Any]
    at: str


@dataclass(frozen=True)
class SessionRow:
    id: str
    slot: str
    serial: str | None
    state: str
    outcome: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class CertificateRow:
    certificate_id: str
    session_id: str
    station_id: str
    sequence: int
    sha256: str
    previous_sha256: str | None
    outcome: str
    data: bytes
    created_at: str


@dataclass(frozen=True)
class ChainHead:
    """The last certificate a station issued (sequence 0 / None before the first)."""

    sequence: int
    sha256: str | None


@dataclass(frozen=True)
class NewCertificate:
    """What an issuing callback hands back to be stored."""

    certificate_id: str
    sha256: str
    outcome: str
    data: bytes


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Store:
    """Async facade over one SQLite database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wipeagent-store")
        self._db: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` in the store's thread. Other modules (the outbox, the
        control API) keep their own tables in the same database through this; `fn` must
        manage its own transaction (the connection is in autocommit mode) and must not
        block on anything but SQLite. sqlite3.Error becomes StoreError (rolled back)."""
        return await self._run(fn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreError("the journal is closed")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                # Roll back whatever the failed call started; the journal stays as it was.
                if self._db.in_transaction:
                    self._db.rollback()
                raise StoreError(f"journal {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> Store:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed step survives a power cut, not just a process crash.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            _migrate_outbox(db)
            db.execute("COMMIT")
            if row is not None and int(row[0]) != SCHEMA_VERSION:
                db.close()
                raise StoreError(
                    f"journal {self.path} has schema {row[0]}, expected {SCHEMA_VERSION}"
                )
            self._db = db

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _DAMAGED:
                raise JournalDamaged(
                    f"journal {self.path} is damaged: {exc} (zeroed, truncated or "
                    "overwritten)") from exc
            raise StoreError(f"cannot open journal {self.path}: {exc}") from exc
        return self

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sessions and steps -------------------------------------------------------------

    async def create_session(self, session_id: str, slot: str) -> None:
        def create(db: sqlite3.Connection) -> None:
            now = _now()
            db.execute(
                "INSERT INTO sessions (id, slot, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, slot, SessionState.STARTED.value, now, now),
            )

        await self._run(create)

    async def journal(
        self,
        session_id: str,
        step: JournalStep,
        data: dict[str, Any],
        *,
        serial: str | None = None,
        outcome: str | None = None,
        state: str | None = None,
    ) -> None:
        """Append one step and move the session to `state` (default: the step name),
        in one transaction."""
        payload = json.dumps(data, sort_keys=True, default=str)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            now = _now()
            db.execute(
                "INSERT INTO steps (session_id, seq, step, data, at) VALUES (?, ?, ?, ?, ?)",
                (session_id, seq, str(step), payload, now),
            )
            cur = db.execute(
                "UPDATE sessions SET state = ?, updated_at = ?,"
                " serial = COALESCE(?, serial), outcome = COALESCE(?, outcome) WHERE id = ?",
                (str(state or step), now, serial, outcome, session_id),
            )
            if cur.rowcount != 1:
                db.execute("ROLLBACK")
                raise StoreError(f"no session {session_id} in the journal")
            db.execute("COMMIT")

        await self._run(write)

    async def steps(self, session_id: str) -> list[StepRow]:
        def read(db: sqlite3.Connection) -> list[StepRow]:
            rows = db.execute(
                "SELECT seq, step, data, at FROM steps WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
            return [StepRow(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

        return await self._run(read)

    async def session(self, session_id: str) -> SessionRow | None:
        def read(db: sqlite3.Connection) -> SessionRow | None:
            row = db.execute(
                "SELECT id, slot, serial, state, outcome, created_at, updated_at"
                " FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
            return SessionRow(*row) if row else None

        return await self._run(read)

    async def sessions(self) -> list[SessionRow]:
        def read(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(
                "SELECT id, slot, serial, state, outcome, created_at, updated_at"
                " FROM sessions ORDER BY created_at"
            ).fetchall()
            return [SessionRow(*r) for r in rows]

        return await self._run(read)

    async def open_session_for(self, serial: str, exclude: str | None = None) -> SessionRow | None:
        """The newest unfinished session of this phone (to resume it), if any."""

        def read(db: sqlite3.Connection) -> SessionRow | None:
            row = db.execute(
                "SELECT id, slot, serial, state, outcome, created_at, updated_at"
                " FROM sessions WHERE serial = ? AND state != ?"
                " AND id IS NOT ? ORDER BY created_at DESC LIMIT 1",
                (serial, SessionState.DONE.value, exclude),
            ).fetchone()
            return SessionRow(*row) if row else None

        return await self._run(read)

    async def sessions_in_states(self, states: tuple[str, ...]) -> list[SessionRow]:
        """Unfinished sessions whose last journaled step is one of `states`."""

        def read(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(
                "SELECT id, slot, serial, state, outcome, created_at, updated_at"
                " FROM sessions WHERE state IN (SELECT value FROM json_each(?))"
                " ORDER BY created_at",
                (json.dumps(list(states)),),
            ).fetchall()
            return [SessionRow(*r) for r in rows]

        return await self._run(read)

    async def unidentified_sessions(self, slot: str, exclude: str) -> list[SessionRow]:
        """Unfinished sessions on `slot` that never identified their phone: the agent
        stopped (crash, SIGTERM, unplug) before `identify` was journaled. Nothing can
        resume them (resuming goes by serial), so the slot's next session ends them."""

        def read(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(
                "SELECT id, slot, serial, state, outcome, created_at, updated_at"
                " FROM sessions WHERE slot = ? AND serial IS NULL AND state != ?"
                " AND id IS NOT ? ORDER BY created_at",
                (slot, SessionState.DONE.value, exclude),
            ).fetchall()
            return [SessionRow(*r) for r in rows]

        return await self._run(read)

    async def open_sessions_on(self, slot: str, exclude: str) -> list[SessionRow]:
        """Unfinished sessions on `slot` that identified their phone (oldest first)."""

        def read(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(
                "SELECT id, slot, serial, state, outcome, created_at, updated_at"
                " FROM sessions WHERE slot = ? AND serial IS NOT NULL AND state != ?"
                " AND id IS NOT ? ORDER BY created_at",
                (slot, SessionState.DONE.value, exclude),
            ).fetchall()
            return [SessionRow(*r) for r in rows]

        return await self._run(read)

    # -- certificates -------------------------------------------------------------------

    async def chain_head(self, station_id: str) -> ChainHead:
        def read(db: sqlite3.Connection) -> ChainHead:
            return _chain_head(db, station_id)

        return await self._run(read)

    async def append_certificate(
        self,
        session_id: str,
        station_id: str,
        issue: Callable[[ChainHead], NewCertificate],
    ) -> CertificateRow:
        """Issue and store a session's certificate atomically, exactly once.

        `issue` gets the chain head and returns the signed certificate; it runs inside the
        transaction, so the sequence it uses is the one stored. If the session already has
        a certificate (a resumed session), that one is returned and `issue` is not called.
        """

        def append(db: sqlite3.Connection) -> CertificateRow:
            db.execute("BEGIN IMMEDIATE")
            existing = db.execute(
                f"SELECT {_CERT_COLUMNS} FROM certificates WHERE session_id = ?", (session_id,)  # noqa: S608 - constant columns
            ).fetchone()
            if existing:
                db.execute("COMMIT")
                return CertificateRow(*existing)
            head = _chain_head(db, station_id)
            try:
                new = issue(head)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            row = CertificateRow(
                certificate_id=new.certificate_id,
                session_id=session_id,
                station_id=station_id,
                sequence=head.sequence + 1,
                sha256=new.sha256,
                previous_sha256=head.sha256,
                outcome=new.outcome,
                data=new.data,
                created_at=_now(),
            )
            db.execute(
                f"INSERT INTO certificates ({_CERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",  # noqa: S608
                (row.certificate_id, row.session_id, row.station_id, row.sequence, row.sha256,
                 row.previous_sha256, row.outcome, row.data, row.created_at),
            )
            db.execute("COMMIT")
            return row

        return await self._run(append)

    async def last_certificate_for_serial(self, serial: str) -> CertificateRow | None:
        """The newest certificate of the phone with this serial, if any."""

        def read(db: sqlite3.Connection) -> CertificateRow | None:
            columns = ", ".join(f"c.{c.strip()}" for c in _CERT_COLUMNS.split(","))
            query = (f"SELECT {columns} FROM certificates c"  # noqa: S608 - constant columns
                     " JOIN sessions s ON s.id = c.session_id WHERE s.serial = ?"
                     " ORDER BY c.created_at DESC, c.sequence DESC LIMIT 1")
            row = db.execute(query, (serial,)).fetchone()
            return CertificateRow(*row) if row else None

        return await self._run(read)

    async def certificate_for(self, session_id: str) -> CertificateRow | None:
        def read(db: sqlite3.Connection) -> CertificateRow | None:
            row = db.execute(
                f"SELECT {_CERT_COLUMNS} FROM certificates WHERE session_id = ?", (session_id,)  # noqa: S608 - constant columns
            ).fetchone()
            return CertificateRow(*row) if row else None

        return await self._run(read)

    async def certificates(self, station_id: str | None = None) -> list[CertificateRow]:
        def read(db: sqlite3.Connection) -> list[CertificateRow]:
            rows = db.execute(
                f"SELECT {_CERT_COLUMNS} FROM certificates"  # noqa: S608 - constant columns
                " WHERE ? IS NULL OR station_id = ? ORDER BY station_id, sequence",
                (station_id, station_id),
            ).fetchall()
            return [CertificateRow(*r) for r in rows]

        return await self._run(read)


_CERT_COLUMNS = (
    "certificate_id, session_id, station_id, sequence, sha256, previous_sha256, outcome,"
    " data, created_at"
)


def _chain_head(db: sqlite3.Connection, station_id: str) -> ChainHead:
    row = db.execute(
        "SELECT sequence, sha256 FROM certificates WHERE station_id = ?"
        " ORDER BY sequence DESC LIMIT 1",
        (station_id,),
    ).fetchone()
    head = ChainHead(row[0], row[1]) if row else ChainHead(0, None)
    floor = db.execute("SELECT sequence, sha256 FROM chain_floor WHERE station_id = ?",
                       (station_id,)).fetchone()
    if floor is not None and floor[0] > head.sequence:
        return ChainHead(floor[0], floor[1])
    return head


# SQLite result codes of a file that is not (or no longer) a database: SQLITE_CORRUPT,
# SQLITE_NOTADB.
_DAMAGED = frozenset({11, 26})
