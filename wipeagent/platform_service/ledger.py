"""Storing a verified certificate once, and checking its station's ledger as it arrives.

`store_certificate` runs one database transaction per upload:

1. the station row (organisation root + station id) is created if new and locked
   (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite has one writer at a time), so two
   uploads of one station, even in two service processes, are checked one after the other;
2. the same id with the same SHA-256 is an idempotent repeat (`already_held`); the same
   id with other bytes is refused as a conflict, and the refused document is kept as the
   evidence of a `duplicate_id` problem;
3. otherwise the certificate is stored, and every ledger problem it reveals is recorded:
   `fork` (another certificate with this station and sequence, or naming the same
   predecessor), `broken_link` (its predecessor's hash is not its `previous_hash`, or
   its successor does not name it). These are facts that stay true, so they are rows of
   `ledger_problems`; gaps are not (the missing certificate may still come), so they are
   computed from the ledger whenever asked.

Nothing is silently accepted: the receipt lists the problems found and the gaps left.
The rules are `wipeagent.certs.verify.check_sequence`'s, applied incrementally.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import Row, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from wipeagent.certs.verify import VerifiedCertificate
from wipeagent.platform_service.db import (
    certificate_imeis,
    certificates,
    ledger_problems,
    stations,
)

MAX_GAP_RANGES = 50  # per report: a ledger with more holes than that is reported as such

Status = Literal["created", "already_held", "conflict"]


@dataclass(frozen=True)
class Problem:
    """A ledger problem: kind fork / broken_link / duplicate_id / gap."""

    kind: str
    station_id: str
    sequence: int | None
    certificate_ids: tuple[str, ...]
    message: str

    def as_json(self) -> dict[str, Any]:
        """The problem as the API shows it."""
        return {"kind": self.kind, "station_id": self.station_id, "sequence": self.sequence,
                "certificate_ids": list(self.certificate_ids), "message": self.message}


@dataclass(frozen=True)
class Stored:
    """What happened to one upload."""

    status: Status
    certificate_id: str
    sha256: str  # of what is held under this id (another hash for a conflict)
    received_at: datetime  # when the held certificate was first received
    problems: list[Problem] = field(default_factory=list)  # found by this upload
    gaps: list[tuple[int, int]] = field(default_factory=list)  # the station's, after it
    missing: int = 0  # sequence numbers missing in the station's ledger, after it

    def ledger_json(self) -> dict[str, Any]:
        """The receipt's `ledger` member."""
        return {
            "status": "ok" if not self.problems and not self.missing else "problems",
            "problems": [p.as_json() for p in self.problems],
            "missing": self.missing,
            "gaps": [{"first": a, "last": b} for a, b in self.gaps],
        }


def root_fingerprint(root: x509.Certificate) -> str:
    """SHA-256 (hex) of a root certificate's DER: how the platform names an organisation."""
    return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()


def organisation_name(root: x509.Certificate) -> str:
    """The root's O (or CN): a label for people, never a key."""
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
        names = root.subject.get_attributes_for_oid(oid)
        if names and isinstance(names[0].value, str):
            return names[0].value
    return root.subject.rfc4514_string()


def _insert(conn: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# The statements of every ingest are built once, with bound parameters: building them per
# upload cost more CPU than the database work (SQLAlchemy compiles each once per dialect
# and caches it; psycopg prepares them server-side after a few uses).
def _upsert_station(dialect: Any) -> Any:
    insert = dialect.insert(stations).values(
        root_sha256=bindparam("b_root"), station_id=bindparam("b_station_id"),
        organisation=bindparam("b_organisation"), first_seen=bindparam("b_now"),
        last_seen=bindparam("b_now"))
    return insert.on_conflict_do_update(
        index_elements=["root_sha256", "station_id"],
        set_={"last_seen": insert.excluded.last_seen}).returning(*stations.c)


_UPSERT_STATION = {"postgresql": _upsert_station(postgresql),
                   "sqlite": _upsert_station(sqlite)}
_c = certificates.c
# Everything the checks need in one read: this id (anywhere), and the station's
# certificates at sequence-1..sequence+1 or naming the same predecessor (a NULL
# predecessor matches nothing).
_NEAR = select(_c.certificate_id, _c.sha256, _c.sequence, _c.previous_hash, _c.received_at,
               _c.station).where(or_(
                   _c.certificate_id == bindparam("b_id"),
                   and_(_c.station == bindparam("b_station"),
                        _c.sequence.between(bindparam("b_low"), bindparam("b_high"))),
                   and_(_c.station == bindparam("b_station"),
                        _c.previous_hash == bindparam("b_prev"))))
_INSERT_CERTIFICATE = certificates.insert()
_INSERT_IMEI = certificate_imeis.insert()
_COUNT_STATION = update(stations).where(stations.c.id == bindparam("b_station")).values(
    certificates=stations.c.certificates + 1, sequences=bindparam("b_sequences"),
    max_sequence=bindparam("b_max_sequence"))


async def _station(conn: AsyncConnection, root: x509.Certificate, station_id: str,
                   now: datetime) -> Row[Any]:
    """The station's row, created if new, locked for this transaction: an upsert that
    always updates takes the row lock in the same statement (one round trip)."""
    return (await conn.execute(_UPSERT_STATION[conn.dialect.name], {
        "b_root": root_fingerprint(root), "b_station_id": station_id,
        "b_organisation": organisation_name(root), "b_now": now})).one()


async def gaps(conn: AsyncConnection, station: int, limit: int = MAX_GAP_RANGES
               ) -> list[tuple[int, int]]:
    """Missing sequence ranges (first, last) of a station's ledger, which starts at 1."""
    held = select(certificates.c.sequence).where(certificates.c.station == station) \
        .distinct().subquery()
    previous = func.lag(held.c.sequence, 1, 0).over(order_by=held.c.sequence)
    pairs = select(held.c.sequence.label("seq"), previous.label("prev")).subquery()
    rows = await conn.execute(
        select(pairs.c.prev + 1, pairs.c.seq - 1)
        .where(pairs.c.seq > pairs.c.prev + 1).order_by(pairs.c.seq).limit(limit))
    return [(int(a), int(b)) for a, b in rows]


async def _record(conn: AsyncConnection, station: int, problem: Problem, *, sha256: str,
                  other_sha256: str | None, now: datetime,
                  evidence: bytes | None = None) -> None:
    ids = problem.certificate_ids
    await conn.execute(
        _insert(conn, ledger_problems)
        .values(station=station, kind=problem.kind, sequence=problem.sequence,
                certificate_id=ids[0], sha256=sha256,
                other_certificate_id=ids[1] if len(ids) > 1 else None,
                other_sha256=other_sha256, message=problem.message, detected_at=now,
                evidence=evidence)
        .on_conflict_do_nothing())


async def store_certificate(conn: AsyncConnection, verified: VerifiedCertificate,
                            data: bytes, *, root: x509.Certificate, client: str,
                            now: datetime) -> Stored:
    """Store one verified certificate and check its ledger (one transaction: `conn`)."""
    cid, sha, seq = verified.certificate_id, verified.sha256, verified.sequence
    prev, sid = verified.previous_hash, verified.station_id
    station = await _station(conn, root, sid, now)
    near = (await conn.execute(_NEAR, {"b_id": cid, "b_station": station.id,
                                       "b_low": seq - 1, "b_high": seq + 1,
                                       "b_prev": prev})).all()
    held = next((r for r in near if r.certificate_id == cid), None)
    if held is not None:
        if held.sha256 == sha:
            return Stored("already_held", cid, sha, held.received_at)
        problem = Problem("duplicate_id", sid, seq, (cid,),
                          f"certificate id {cid} sent again with other content "
                          f"(held {held.sha256[:12]}, sent {sha[:12]}): refused")
        await _record(conn, station.id, problem, sha256=sha, other_sha256=held.sha256,
                      now=now, evidence=data)
        return Stored("conflict", cid, held.sha256, held.received_at, [problem])
    ours = [r for r in near if r.station == station.id]

    problems: list[Problem] = []
    same_seq = [r for r in ours if r.sequence == seq]
    for other in same_seq:
        problem = Problem("fork", sid, seq, (cid, other.certificate_id),
                          f"two certificates with sequence {seq} of station {sid}")
        problems.append(problem)
        await _record(conn, station.id, problem, sha256=sha, other_sha256=other.sha256,
                      now=now)
    if prev is not None:
        for sibling in (r for r in ours if r.previous_hash == prev and r.sequence != seq):
            problem = Problem("fork", sid, seq, (cid, sibling.certificate_id),
                              f"sequences {seq} and {sibling.sequence} name one predecessor "
                              f"{prev[:12]}")
            problems.append(problem)
            await _record(conn, station.id, problem, sha256=sha,
                          other_sha256=sibling.sha256, now=now)
        before = [r for r in ours if r.sequence == seq - 1]
        if before and prev not in {b.sha256 for b in before}:
            problem = Problem("broken_link", sid, seq, (cid, before[0].certificate_id),
                              f"sequence {seq} does not link to the held sequence {seq - 1}")
            problems.append(problem)
            await _record(conn, station.id, problem, sha256=sha,
                          other_sha256=before[0].sha256, now=now)
    at_seq = {sha} | {o.sha256 for o in same_seq}
    for succ in (r for r in ours if r.sequence == seq + 1):
        if succ.previous_hash not in at_seq:
            problem = Problem("broken_link", sid, seq + 1, (succ.certificate_id, cid),
                              f"sequence {seq + 1} does not link to sequence {seq}")
            problems.append(problem)
            await _record(conn, station.id, problem, sha256=succ.sha256, other_sha256=sha,
                          now=now)

    payload = verified.payload
    device = payload["device"] or {}
    await conn.execute(_INSERT_CERTIFICATE, {
        "certificate_id": cid, "sha256": sha, "station": station.id, "sequence": seq,
        "previous_hash": prev, "issued_at": verified.issued_at, "received_at": now,
        "outcome": verified.outcome, "category": payload["sanitization"]["category"],
        "platform": device.get("platform"), "manufacturer": device.get("manufacturer"),
        "model": device.get("model"), "serial": device.get("serial"),
        "development": verified.development, "client": client, "data": data,
        "booking_reference": (payload.get("intake") or {}).get("reference") or None})
    imeis = sorted(set(device.get("imeis") or ()))
    if imeis:
        await conn.execute(_INSERT_IMEI,
                           [{"certificate_id": cid, "imei": imei} for imei in imeis])
    new_sequence = not same_seq
    sequences = station.sequences + (1 if new_sequence else 0)
    max_sequence = max(station.max_sequence, seq)
    await conn.execute(_COUNT_STATION, {"b_station": station.id, "b_sequences": sequences,
                                        "b_max_sequence": max_sequence})
    missing = max_sequence - sequences
    found = await gaps(conn, station.id) if missing else []
    return Stored("created", cid, sha, now, problems, found, missing)


def involving(certificate_id: str) -> Any:
    """A WHERE clause: ledger problems naming this certificate."""
    return and_(ledger_problems.c.kind != "duplicate_id",
                (ledger_problems.c.certificate_id == certificate_id)
                | (ledger_problems.c.other_certificate_id == certificate_id))
