"""The journal is precious: what keeps the station chain whole when the journal is lost.

The journal (SQLite) holds the certificates and the station chain. Two things live beside
it, where losing or damaging the journal file cannot take them along:

- the **exported certificates** (`state/certificates/<station>-<seq>-<id>.jws.json`), one
  file per committed certificate, written (fsync, rename) right after the commit;
- the **chain-head record** (`state/chain-head.json`, this module): per station the last
  committed sequence, hash and certificate id, and every certificate that is signed but
  not yet exported, with its bytes. It is written atomically (temporary file, fsync,
  rename, fsync of the directory) *before* a certificate is committed (the certificate
  is "held") and again after it is exported (held no more, head advanced).

So every certificate that was committed, and so might have left the bench, is in the
journal, in the exported files or held in the record; and the record knows the chain's
last sequence and hash even if all of those were lost.

At start-up (`check_journal`) the journal is compared with both:

- journal ahead or level: normal. The record catches up (a crash after a commit), held
  certificates that the journal has are exported, held ones it never committed are
  dropped (their bytes never left the record), and committed certificates missing from
  the export directory are exported again;
- journal *fresh* (deleted, or zero-length: no sessions, no certificates) while the
  record or the exports know certificates: it is rebuilt at once — every exported and
  held certificate is verified and imported, re-queued for delivery (the platform answers
  200 for what it already holds), and the chain continues after the record's head
  (sequence + 1, previous hash linked): no fork, no certificate lost;
- journal *behind* (it has data but lacks certificates the record or the exports know:
  restored from an older copy, or replaced), or disagreeing on a hash: refused
  (`JournalBehind`, exit 78) with the recovery command;
- journal damaged (not a database, zeroed header, truncated): refused (`JournalDamaged`,
  exit 78) with the recovery command.

`wipeagent journal recover` (`recover_journal`) keeps a damaged or foreign journal aside
(renamed, never deleted), or keeps a behind one, imports what it lacks and continues the
chain. A sequence number is never issued twice: the journal's unique (station, sequence)
key, the record's head and the `chain_floor` table (the head when the certificates that
ended the chain are not in a rebuilt journal) all stand in the way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from wipeagent.certs.verify import verify_certificate
from wipeagent.errors import CertificateError, JournalBehind, JournalDamaged, StoreError
from wipeagent.store import CertificateRow, ChainHead, Store

log = logging.getLogger(__name__)

CHAIN_HEAD_FILE = "chain-head.json"
RECORD_VERSION = 1
_EXPORT_NAME = re.compile(
    r"^(?P<station>.+)-(?P<seq>\d{6,})-"
    r"(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jws\.json$")


def certificate_filename(station_id: str, sequence: int, certificate_id: str) -> str:
    """File name of an exported certificate: station, sequence and id (never phone data)."""
    return f"{station_id}-{sequence:06d}-{certificate_id}.jws.json"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


# -- the chain-head record -----------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A station's last committed certificate as the record knows it."""

    sequence: int
    sha256: str | None
    certificate_id: str | None = None


@dataclass(frozen=True)
class Held:
    """A signed certificate the record keeps until it is exported."""

    station_id: str
    sequence: int
    sha256: str
    certificate_id: str
    previous_sha256: str | None
    data: bytes

    def as_json(self) -> dict[str, Any]:
        return {"station_id": self.station_id, "sequence": self.sequence,
                "sha256": self.sha256, "certificate_id": self.certificate_id,
                "previous_sha256": self.previous_sha256,
                "data": base64.b64encode(self.data).decode("ascii")}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Held:
        data = base64.b64decode(doc["data"], validate=True)
        if hashlib.sha256(data).hexdigest() != doc["sha256"]:
            raise ValueError("held certificate bytes do not match their hash")
        return cls(str(doc["station_id"]), int(doc["sequence"]), str(doc["sha256"]),
                   str(doc["certificate_id"]), doc.get("previous_sha256"), data)


@dataclass
class ChainRecord:
    """`state/chain-head.json`. Thread-safe: certificates are issued from the journal's
    thread and exported from worker threads."""

    path: Path
    heads: dict[str, Head] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)  # by certificate id
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _loaded: bool = False

    def load(self) -> ChainRecord:
        """Read the file (absent: nothing recorded yet). An unreadable record is logged
        and ignored: the journal and the exports rebuild it."""
        with self._lock:
            self._load()
        return self

    def _load(self) -> None:
        self._loaded = True
        self.heads, self.held = {}, {}
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(raw)
            for station, h in doc["heads"].items():
                self.heads[str(station)] = Head(int(h["sequence"]), h.get("sha256"),
                                                h.get("certificate_id"))
            for item in doc.get("held", []):
                held = Held.from_json(item)
                self.held[held.certificate_id] = held
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("chain-head record %s is unreadable (%s): rebuilt from the journal "
                      "and the exported certificates", self.path, exc)
            self.heads, self.held = {}, {}

    def _write(self) -> None:
        doc = {"version": RECORD_VERSION,
               "heads": {s: {"sequence": h.sequence, "sha256": h.sha256,
                             "certificate_id": h.certificate_id}
                         for s, h in sorted(self.heads.items())},
               "held": [h.as_json() for h in sorted(self.held.values(),
                                                     key=lambda h: (h.station_id, h.sequence))]}
        try:
            write_atomically(self.path, json.dumps(doc, indent=1).encode())
        except OSError as exc:
            raise StoreError(f"cannot write the chain-head record {self.path}: "
                             f"{exc.strerror}") from exc

    def _advance(self, station_id: str, head: Head) -> bool:
        current = self.heads.get(station_id)
        if head.sequence > 0 and (current is None or head.sequence > current.sequence):
            self.heads[station_id] = head
            return True
        return False

    def head(self, station_id: str) -> Head:
        """The recorded head of `station_id` (sequence 0 before the first)."""
        with self._lock:
            if not self._loaded:
                self._load()
            return self.heads.get(station_id, Head(0, None))

    def hold(self, committed: ChainHead, station_id: str, held: Held) -> None:
        """Before committing `held`: keep its bytes, and the head it follows.

        `committed` is the journal's head the certificate was signed after, so nothing of
        this station from `held.sequence` on is committed: a held certificate there (a
        signing whose commit failed or lost the race) is dropped, never kept beside it."""
        with self._lock:
            if not self._loaded:
                self._load()
            self._advance(station_id, Head(committed.sequence, committed.sha256))
            for other in [h for h in self.held.values() if h.station_id == station_id
                          and h.sequence >= held.sequence]:
                del self.held[other.certificate_id]
            self.held[held.certificate_id] = held
            self._write()

    def settle(self, rows: list[CertificateRow], *, drop: tuple[str, ...] = ()) -> None:
        """`rows` are committed and exported: advance the heads, hold them no more; also
        forget the held certificates `drop` (never committed)."""
        with self._lock:
            if not self._loaded:
                self._load()
            changed = False
            for row in rows:
                changed |= self._advance(row.station_id, Head(row.sequence, row.sha256,
                                                             row.certificate_id))
                changed |= self.held.pop(row.certificate_id, None) is not None
            for certificate_id in drop:
                changed |= self.held.pop(certificate_id, None) is not None
            if changed or not self.path.exists():
                self._write()

    def set_head(self, station_id: str, head: Head) -> None:
        """Advance a station's head (recovery)."""
        with self._lock:
            if not self._loaded:
                self._load()
            if self._advance(station_id, head):
                self._write()


# -- the exported certificates -----------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """An exported certificate file, by its name."""

    station_id: str
    sequence: int
    certificate_id: str
    path: Path


def exported(out_dir: Path) -> dict[str, list[Exported]]:
    """Exported certificate files per station, in sequence order (names only)."""
    found: dict[str, list[Exported]] = {}
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return found
    for name in names:
        m = _EXPORT_NAME.match(name)
        if m:
            found.setdefault(m["station"], []).append(
                Exported(m["station"], int(m["seq"]), m["id"], out_dir / name))
    for files in found.values():
        files.sort(key=lambda e: (e.sequence, e.certificate_id))
    return found


def export_certificate(out_dir: Path, row: CertificateRow) -> Path:
    """Write a committed certificate's file (atomic; kept if it exists)."""
    path = out_dir / certificate_filename(row.station_id, row.sequence, row.certificate_id)
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, row.data)
    return path


# -- importing certificates into a journal --------------------------------------------------


@dataclass(frozen=True)
class Importable:
    """A verified certificate found outside the journal."""

    certificate_id: str
    station_id: str
    sequence: int
    sha256: str
    previous_sha256: str | None
    data: bytes
    session_id: str
    slot: str
    serial: str | None
    outcome: str
    issued_at: str
    source: str  # where it was found (for reports)


def importable(data: bytes, trust_roots: list[x509.Certificate], source: str
               ) -> Importable:
    """Verify a certificate found outside the journal; CertificateError if it is not a
    genuine, whole certificate of ours."""
    verified = verify_certificate(data, trust_roots=trust_roots)
    payload = verified.payload
    custody = payload.get("custody") or {}
    device = payload.get("device") or {}
    return Importable(
        certificate_id=verified.certificate_id, station_id=verified.station_id,
        sequence=verified.sequence, sha256=hashlib.sha256(data).hexdigest(),
        previous_sha256=verified.previous_hash, data=data,
        session_id=str(custody.get("session_id") or f"recovered-{verified.certificate_id}"),
        slot=str(custody.get("slot") or "recovered"),
        serial=device.get("serial") if isinstance(device.get("serial"), str) else None,
        outcome=str(payload["outcome"]["result"]),
        issued_at=verified.issued_at.astimezone(UTC).isoformat(timespec="microseconds"),
        source=source,
    )


def _import(db: sqlite3.Connection, items: list[Importable], floors: dict[str, Head]
            ) -> int:
    """Insert `items` (and their sessions, ended) and the chain floors, in one
    transaction; returns how many certificates were new. A certificate whose sequence
    the journal holds under another id is a fork: JournalBehind."""
    db.execute("BEGIN IMMEDIATE")
    added = 0
    for item in sorted(items, key=lambda i: (i.station_id, i.sequence)):
        held = db.execute("SELECT certificate_id FROM certificates WHERE station_id = ?"
                          " AND sequence = ?", (item.station_id, item.sequence)).fetchone()
        if held is not None:
            if held[0] != item.certificate_id:
                db.execute("ROLLBACK")
                raise JournalBehind(
                    f"certificate #{item.sequence} of {item.station_id} in the journal is "
                    f"{held[0]}, but {item.source} holds {item.certificate_id}: two "
                    "certificates with one sequence number")
            continue
        session_id = item.session_id
        if db.execute("SELECT 1 FROM certificates WHERE session_id = ?",
                      (session_id,)).fetchone():
            session_id = f"recovered-{item.certificate_id}"
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        db.execute("INSERT OR IGNORE INTO sessions (id, slot, serial, state, outcome,"
                   " created_at, updated_at) VALUES (?, ?, ?, 'done', ?, ?, ?)",
                   (session_id, item.slot, item.serial, item.outcome, item.issued_at, now))
        db.execute("UPDATE sessions SET state = 'done', outcome = ? WHERE id = ?",
                   (item.outcome, session_id))
        db.execute("INSERT INTO certificates (certificate_id, session_id, station_id,"
                   " sequence, sha256, previous_sha256, outcome, data, created_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (item.certificate_id, session_id, item.station_id, item.sequence,
                    item.sha256, item.previous_sha256, item.outcome, item.data,
                    item.issued_at))
        added += 1
    for station_id, head in floors.items():
        db.execute("INSERT INTO chain_floor (station_id, sequence, sha256) VALUES (?, ?, ?)"
                   " ON CONFLICT (station_id) DO UPDATE SET sequence = excluded.sequence,"
                   " sha256 = excluded.sha256 WHERE excluded.sequence > sequence",
                   (station_id, head.sequence, head.sha256))
    db.execute("COMMIT")
    return added


# -- the start-up check and the recovery ------------------------------------------------------


@dataclass
class JournalReport:
    """What the start-up check or the recovery did."""

    rebuilt: bool = False
    imported: int = 0
    re_exported: int = 0
    dropped: int = 0  # held certificates never committed
    unreadable: list[str] = field(default_factory=list)  # export files that failed checks
    heads: dict[str, ChainHead] = field(default_factory=dict)
    kept_aside: Path | None = None

    def summary(self) -> str:
        """One line for people."""
        heads = ", ".join(f"{s} continues at #{h.sequence + 1}" for s, h in
                          sorted(self.heads.items())) or "no certificates yet"
        parts = [f"chain: {heads}"]
        if self.imported:
            parts.append(f"{self.imported} certificate(s) re-imported and queued for "
                         "delivery")
        if self.re_exported:
            parts.append(f"{self.re_exported} certificate file(s) exported again")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} exported file(s) failed verification and "
                         f"were not imported: {', '.join(self.unreadable[:3])}")
        if self.kept_aside:
            parts.append(f"the old journal is kept at {self.kept_aside}")
        return "; ".join(parts)


async def _journal_state(store: Store) -> tuple[bool, dict[str, ChainHead], list[str]]:
    """(fresh, heads per station, integrity problems)."""

    def read(db: sqlite3.Connection) -> tuple[bool, dict[str, ChainHead], list[str]]:
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            return False, {}, problems
        (sessions,) = db.execute("SELECT COUNT(*) FROM sessions").fetchone()
        stations = [r[0] for r in db.execute(
            "SELECT DISTINCT station_id FROM certificates UNION"
            " SELECT station_id FROM chain_floor")]
        heads = {}
        for station in stations:
            row = db.execute("SELECT sequence, sha256 FROM certificates WHERE station_id = ?"
                             " ORDER BY sequence DESC LIMIT 1", (station,)).fetchone()
            floor = db.execute("SELECT sequence, sha256 FROM chain_floor WHERE"
                               " station_id = ?", (station,)).fetchone()
            best = max([r for r in (row, floor) if r is not None], key=lambda r: r[0])
            heads[station] = ChainHead(best[0], best[1])
        return sessions == 0 and not stations, heads, []

    try:
        return await store.run(read)
    except StoreError as exc:
        raise JournalDamaged(f"journal {store.path} is damaged: {exc}") from exc


async def _sha_at(store: Store, station_id: str, sequence: int) -> tuple[str, str] | None:
    def read(db: sqlite3.Connection) -> tuple[str, str] | None:
        row = db.execute("SELECT sha256, certificate_id FROM certificates WHERE"
                         " station_id = ? AND sequence = ?", (station_id, sequence)).fetchone()
        return (row[0], row[1]) if row else None

    return await store.run(read)


def _read_exports(files: list[Exported], trust_roots: list[x509.Certificate],
                  report: JournalReport) -> list[Importable]:
    found = []
    for e in files:
        try:
            item = importable(e.path.read_bytes(), trust_roots, str(e.path))
        except (OSError, CertificateError) as exc:
            log.error("exported certificate %s is not importable: %s", e.path, exc)
            report.unreadable.append(e.path.name)
            continue
        if (item.certificate_id, item.station_id, item.sequence) != (
                e.certificate_id, e.station_id, e.sequence):
            report.unreadable.append(e.path.name)
            continue
        found.append(item)
    return found


def _held_importable(held: list[Held], trust_roots: list[x509.Certificate],
                     report: JournalReport) -> list[Importable]:
    found = []
    for h in held:
        try:
            found.append(importable(h.data, trust_roots, "the chain-head record"))
        except CertificateError as exc:
            log.error("held certificate %s is not importable: %s", h.certificate_id, exc)
            report.unreadable.append(f"held {h.certificate_id}")
    return found


async def _rebuild(store: Store, record: ChainRecord, out_dir: Path,
                   trust_roots: list[x509.Certificate], *, above: dict[str, ChainHead],
                   report: JournalReport) -> None:
    """Import exported and held certificates beyond `above` (per station) and set the
    chain floors from the record; export what was only held."""
    files = exported(out_dir)
    stations = set(files) | set(record.heads) | {h.station_id for h in record.held.values()}
    items: list[Importable] = []
    floors: dict[str, Head] = {}
    for station in sorted(stations):
        start = above.get(station, ChainHead(0, None)).sequence
        items += _read_exports([e for e in files.get(station, []) if e.sequence > start],
                               trust_roots, report)
        held = [h for h in record.held.values()
                if h.station_id == station and h.sequence > start]
        items += _held_importable(held, trust_roots, report)
        recorded = record.heads.get(station)
        if recorded is not None and recorded.sequence > start:
            floors[station] = recorded
    # One certificate per sequence: an exported file and a held copy are the same bytes.
    unique = {(i.station_id, i.sequence, i.certificate_id): i for i in items}
    report.imported += await store.run(lambda db: _import(db, list(unique.values()), floors))
    ids = json.dumps(sorted(i.certificate_id for i in unique.values()))
    rows = await _rows(store, "certificate_id IN (SELECT value FROM json_each(?))", (ids,))
    for row in rows:
        export_certificate(out_dir, row)
    record.settle(rows)


async def check_journal(store: Store, record: ChainRecord, out_dir: Path,
                        trust_roots: list[x509.Certificate]) -> JournalReport:
    """The start-up check (see the module doc): returns what it did, or raises
    JournalDamaged / JournalBehind (exit 78) for a person to decide."""
    report = JournalReport()
    fresh, heads, problems = await _journal_state(store)
    if problems:
        raise JournalDamaged(f"journal {store.path} is damaged: {'; '.join(problems[:2])}")
    record.load()
    files = exported(out_dir)
    stations = sorted(set(heads) | set(files) | set(record.heads)
                      | {h.station_id for h in record.held.values()})
    known = {s: max(record.heads.get(s, Head(0, None)).sequence,
                    files[s][-1].sequence if s in files else 0) for s in stations}
    if fresh and (any(known.values()) or record.held):
        log.warning("journal %s is new but the station has issued certificates: rebuilding "
                    "it from the exported certificates and the chain-head record", store.path)
        await _rebuild(store, record, out_dir, trust_roots, above={}, report=report)
        report.rebuilt = True
        _, report.heads, _ = await _journal_state(store)
        log.warning("journal rebuilt: %s", report.summary())
        return report
    for station in stations:
        head = heads.get(station, ChainHead(0, None))
        if head.sequence < known[station]:
            where = []
            r = record.heads.get(station)
            if r is not None and r.sequence > head.sequence:
                where.append(f"the chain-head record {record.path} says #{r.sequence}")
            if station in files and files[station][-1].sequence > head.sequence:
                where.append(f"exported certificates in {out_dir} reach "
                             f"#{files[station][-1].sequence}")
            raise JournalBehind(
                f"journal {store.path} went backwards: its last certificate of station "
                f"{station} is #{head.sequence}, but {' and '.join(where)} (a restored or "
                "replaced journal would issue those sequence numbers again)")
        await _check_same_chain(store, station, record.heads.get(station),
                                files.get(station, []))
    await _settle(store, record, out_dir, report)
    _, report.heads, _ = await _journal_state(store)
    return report


async def _check_same_chain(store: Store, station: str, recorded: Head | None,
                            files: list[Exported]) -> None:
    """The journal's certificate at the record's and the last export's sequence must be
    the very one they name."""
    marks = []
    if recorded is not None and recorded.sequence > 0 and recorded.certificate_id:
        marks.append((recorded.sequence, recorded.certificate_id, "the chain-head record"))
    if files:
        last = files[-1]
        marks.append((last.sequence, last.certificate_id, f"exported file {last.path.name}"))
    for sequence, certificate_id, source in marks:
        at = await _sha_at(store, station, sequence)
        if at is not None and at[1] != certificate_id:
            raise JournalBehind(
                f"journal {store.path} holds certificate {at[1]} as #{sequence} of station "
                f"{station}, but {source} names {certificate_id}: it is another chain")


async def _settle(store: Store, record: ChainRecord, out_dir: Path,
                  report: JournalReport) -> None:
    """Journal level with or ahead of everything: export what is missing, settle the
    record (held certificates committed, or never committed: dropped), heads from the
    journal."""
    files = exported(out_dir)
    _, heads, _ = await _journal_state(store)
    rows: dict[str, CertificateRow] = {}
    for station, head in heads.items():
        last = files[station][-1].sequence if station in files else 0
        if head.sequence > last:
            for row in await _rows(store, "station_id = ? AND sequence > ?", (station, last)):
                rows[row.certificate_id] = row
    held = set(record.held)
    for row in await _rows(store, "certificate_id IN (SELECT value FROM json_each(?))",
                           (json.dumps(sorted(held)),)):
        rows[row.certificate_id] = row
    for row in rows.values():
        path = out_dir / certificate_filename(row.station_id, row.sequence,
                                              row.certificate_id)
        if not path.exists():
            export_certificate(out_dir, row)
            report.re_exported += 1
    dropped = tuple(sorted(held - set(rows)))
    report.dropped = len(dropped)
    record.settle(list(rows.values()), drop=dropped)
    for station, head in heads.items():
        at = await _sha_at(store, station, head.sequence)
        record.set_head(station, Head(head.sequence, head.sha256, at[1] if at else None))


async def _rows(store: Store, where: str, args: tuple[object, ...]) -> list[CertificateRow]:
    columns = ", ".join(f.name for f in dataclass_fields(CertificateRow))

    def read(db: sqlite3.Connection) -> list[CertificateRow]:
        return [CertificateRow(*r) for r in db.execute(
            f"SELECT {columns} FROM certificates WHERE {where}", args)]  # noqa: S608 - constant

    return await store.run(read)


@contextlib.contextmanager
def _aside(journal: Path) -> Iterator[Path]:
    """Move a journal (and its -wal / -shm) aside under a dated name; yields the name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = journal.with_name(f"{journal.name}.kept-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{journal}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    yield target


async def recover_journal(journal: Path, record: ChainRecord, out_dir: Path,
                          trust_roots: list[x509.Certificate]) -> JournalReport:
    """`wipeagent journal recover` (the agent must be stopped): keep a damaged journal,
    or one on another chain, aside and start a new one; import every exported or held
    certificate the journal lacks; continue the chain after the record's head."""
    report = JournalReport()
    record.load()
    store: Store | None = None
    try:
        store = await Store(journal).open()
        _fresh, heads, problems = await _journal_state(store)
        if problems:
            raise JournalDamaged("; ".join(problems[:2]))
        await _links_or_raise(store, record, out_dir, trust_roots, heads)
    except JournalDamaged as exc:
        if store is not None:
            await store.close()
            store = None
        log.warning("journal %s cannot be used (%s): keeping it aside", journal, exc)
        with _aside(journal) as kept:
            report.kept_aside = kept
        heads = {}
    except JournalBehind as exc:
        assert store is not None
        await store.close()
        store = None
        log.warning("journal %s is on another chain (%s): keeping it aside", journal, exc)
        with _aside(journal) as kept:
            report.kept_aside = kept
        heads = {}
    if store is None:
        store = await Store(journal).open()
    try:
        await _rebuild(store, record, out_dir, trust_roots, above=heads, report=report)
        await _settle(store, record, out_dir, report)
        _, report.heads, _ = await _journal_state(store)
    finally:
        await store.close()
    return report


async def _links_or_raise(store: Store, record: ChainRecord, out_dir: Path,
                          trust_roots: list[x509.Certificate],
                          heads: dict[str, ChainHead]) -> None:
    """A journal behind the exports is kept only if what it lacks links to its head."""
    files = exported(out_dir)
    for station, head in heads.items():
        nxt = [e for e in files.get(station, []) if e.sequence == head.sequence + 1]
        if not nxt:
            continue
        try:
            item = importable(nxt[0].path.read_bytes(), trust_roots, str(nxt[0].path))
        except (OSError, CertificateError):
            continue
        if item.previous_sha256 != head.sha256:
            raise JournalBehind(f"exported #{item.sequence} does not link to the journal's "
                                f"#{head.sequence}")
    for station, recorded in record.heads.items():
        mine = heads.get(station)
        if mine is not None and recorded.sequence <= mine.sequence:
            await _check_same_chain(store, station, recorded, [])
