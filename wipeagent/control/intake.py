"""The intake list: phones the trading platform booked in, by serial number or IMEI.

Under the `intake` erase policy only a phone whose serial or one of whose IMEIs is on this
list is erased. The list is a table in the journal database (through `Store.run`), so it
survives restarts and is written with the same durability as the journal. Entries come
from the control API (POST /intake, a technician or a script) and, later, from a platform
feed: `IntakeList.add` takes a `source` and an optional platform `reference` (e.g. a
trade-in order number) so a feed can replace its own entries without touching others
(`replace_source`).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wipeagent.control.bench import ControlError
from wipeagent.identifiers import luhn_ok, valid_imei
from wipeagent.models import DeviceIdentity
from wipeagent.store import Store

_TABLE = """
CREATE TABLE IF NOT EXISTS control_intake (
    identifier TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('serial', 'imei')),
    source TEXT NOT NULL,
    reference TEXT NOT NULL DEFAULT '',
    added_by TEXT,
    added_at TEXT NOT NULL
)
"""

# The same alphabet the platform code accepts for serials; IMEIs are 15 digits (14 + Luhn).
SERIAL = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
IMEI = re.compile(r"^[0-9]{15}$")
_TEXT = re.compile(r"^[\x20-\x7e]{0,100}$")
MAX_BATCH = 10_000


@dataclass(frozen=True)
class IntakeEntry:
    """One booked-in phone."""

    identifier: str
    kind: str  # "serial" or "imei"
    source: str = "api"
    reference: str = ""
    added_by: str | None = None
    added_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "kind": self.kind, "source": self.source,
                "reference": self.reference, "added_by": self.added_by,
                "added_at": self.added_at}


__all__ = ["IMEI", "SERIAL", "IntakeEntry", "IntakeList", "luhn_ok", "parse_entry"]


def parse_entry(raw: object, *, source: str, added_by: str | None) -> IntakeEntry:
    """Validate one entry from the API or a feed: {"serial": ...} or {"imei": ...},
    with an optional "reference". ControlError (400) on anything else."""
    if not isinstance(raw, dict):
        raise ControlError("bad_intake", "an intake entry is an object", status=400)
    unknown = set(raw) - {"serial", "imei", "reference"}
    if unknown or ("serial" in raw) == ("imei" in raw):
        raise ControlError("bad_intake",
                           'an intake entry has exactly one of "serial" or "imei" '
                           'and optionally "reference"', status=400)
    reference = raw.get("reference", "")
    if not isinstance(reference, str) or not _TEXT.fullmatch(reference):
        raise ControlError("bad_intake", "reference: up to 100 printable ASCII characters",
                           status=400)
    if "serial" in raw:
        value = raw["serial"]
        if not isinstance(value, str) or not SERIAL.fullmatch(value):
            raise ControlError("bad_intake", "serial: 1-64 of A-Z a-z 0-9 . _ : -",
                               status=400)
        return IntakeEntry(value, "serial", source, reference, added_by)
    value = raw["imei"]
    if not isinstance(value, str) or not valid_imei(value):
        raise ControlError("bad_intake", "imei: 15 digits with a valid check digit",
                           status=400)
    return IntakeEntry(value, "imei", source, reference, added_by)


def _row(r: tuple[Any, ...]) -> IntakeEntry:
    return IntakeEntry(r[0], r[1], r[2], r[3], r[4], r[5])


class IntakeList:
    """The booked-in phones, kept in the journal database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, entries: list[IntakeEntry]) -> int:
        """Book phones in (an identifier already listed is updated). Returns the count."""
        if len(entries) > MAX_BATCH:
            raise ControlError("bad_intake", f"at most {MAX_BATCH} entries at once", status=400)
        now = datetime.now(UTC).isoformat(timespec="seconds")

        def write(db: sqlite3.Connection) -> int:
            db.execute(_TABLE)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO control_intake (identifier, kind, source, reference, added_by,"
                " added_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(identifier) DO UPDATE SET"
                " kind=excluded.kind, source=excluded.source, reference=excluded.reference,"
                " added_by=excluded.added_by, added_at=excluded.added_at",
                [(e.identifier, e.kind, e.source, e.reference, e.added_by, now)
                 for e in entries])
            db.execute("COMMIT")
            return len(entries)

        return await self.store.run(write)

    async def add_scanned(self, entry: IntakeEntry) -> IntakeEntry:
        """Book in one scanned phone; returns the entry as held. A scan without a booking
        reference never replaces an entry already listed for that identifier (the
        platform's booking with its reference stays what the phone matches); a scan
        with a reference (scanned just before) updates it."""
        now = datetime.now(UTC).isoformat(timespec="seconds")

        def write(db: sqlite3.Connection) -> IntakeEntry:
            db.execute(_TABLE)
            db.execute("BEGIN IMMEDIATE")
            held = db.execute(
                "SELECT identifier, kind, source, reference, added_by, added_at"
                " FROM control_intake WHERE identifier = ?", (entry.identifier,)).fetchone()
            if held is not None and not entry.reference:
                db.execute("COMMIT")
                return _row(held)
            db.execute(
                "INSERT OR REPLACE INTO control_intake (identifier, kind, source, reference,"
                " added_by, added_at) VALUES (?, ?, ?, ?, ?, ?)",
                (entry.identifier, entry.kind, entry.source, entry.reference,
                 entry.added_by, now))
            db.execute("COMMIT")
            return IntakeEntry(entry.identifier, entry.kind, entry.source, entry.reference,
                               entry.added_by, now)

        return await self.store.run(write)

    async def replace_source(self, source: str, entries: list[IntakeEntry]) -> int:
        """A feed's full list: drop this source's entries and add these, atomically."""
        now = datetime.now(UTC).isoformat(timespec="seconds")

        def write(db: sqlite3.Connection) -> int:
            db.execute(_TABLE)
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM control_intake WHERE source = ?", (source,))
            db.executemany(
                "INSERT OR REPLACE INTO control_intake (identifier, kind, source, reference,"
                " added_by, added_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(e.identifier, e.kind, source, e.reference, e.added_by, now)
                 for e in entries])
            db.execute("COMMIT")
            return len(entries)

        return await self.store.run(write)

    async def remove(self, identifier: str) -> bool:
        """Take a phone off the list; False if it was not on it."""

        def write(db: sqlite3.Connection) -> bool:
            db.execute(_TABLE)
            cur = db.execute("DELETE FROM control_intake WHERE identifier = ?", (identifier,))
            return cur.rowcount > 0

        return await self.store.run(write)

    async def entries(self, limit: int = 1000) -> list[IntakeEntry]:
        def read(db: sqlite3.Connection) -> list[IntakeEntry]:
            db.execute(_TABLE)
            rows = db.execute(
                "SELECT identifier, kind, source, reference, added_by, added_at"
                " FROM control_intake ORDER BY added_at, identifier LIMIT ?", (limit,),
            ).fetchall()
            return [_row(r) for r in rows]

        return await self.store.run(read)

    async def newest(self, limit: int, containing: str = "") -> tuple[list[IntakeEntry], int]:
        """The `limit` newest entries whose identifier or reference contains
        `containing` (all when ""), newest first, and how many entries match in all."""

        where = (" FROM control_intake WHERE :q = '' OR instr(identifier, :q) > 0"
                 " OR instr(reference, :q) > 0")

        def read(db: sqlite3.Connection) -> tuple[list[IntakeEntry], int]:
            db.execute(_TABLE)
            rows = db.execute(
                "SELECT identifier, kind, source, reference, added_by, added_at" + where
                + " ORDER BY added_at DESC, identifier LIMIT :limit",
                {"q": containing, "limit": limit}).fetchall()
            total = db.execute("SELECT count(*)" + where, {"q": containing}).fetchone()[0]
            return [_row(r) for r in rows], int(total)

        return await self.store.run(read)

    async def match(self, identity: DeviceIdentity) -> IntakeEntry | None:
        """The entry that books this phone in: its serial, or one of its IMEIs."""
        serial_ids = [identity.serial]
        imei_ids = list(identity.imeis)

        def read(db: sqlite3.Connection) -> IntakeEntry | None:
            db.execute(_TABLE)
            for kind, ids in (("serial", serial_ids), ("imei", imei_ids)):
                for identifier in ids:
                    row = db.execute(
                        "SELECT identifier, kind, source, reference, added_by, added_at"
                        " FROM control_intake WHERE identifier = ? AND kind = ?",
                        (identifier, kind),
                    ).fetchone()
                    if row:
                        return _row(row)
            return None

        return await self.store.run(read)
