"""What platform engineers ask the database: certificates by id, IMEI, serial, booking
reference, station, date range and outcome; stations and their ledgers; recorded ledger problems.

Every function takes an open connection and returns plain JSON-ready dicts, so the HTTP
layer (app.py) only parses parameters and serialises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wipeagent.platform_service.db import (
    certificate_imeis,
    certificates,
    ledger_problems,
    stations,
)
from wipeagent.platform_service.ledger import MAX_GAP_RANGES, gaps, involving

MAX_LIMIT = 1000
OUTCOMES = ("erased", "erased_with_exceptions", "not_erased")


@dataclass(frozen=True)
class Filters:
    """A certificate search; every given field must match (AND)."""

    certificate_id: str | None = None
    imei: str | None = None
    serial: str | None = None
    booking: str | None = None  # the booking reference (the certificate's intake section)
    station_id: str | None = None
    root_sha256: str | None = None
    outcome: str | None = None
    issued_from: datetime | None = None  # inclusive
    issued_to: datetime | None = None  # exclusive
    # Keyset pagination: the (issued_at, certificate_id) of the last row of the last page.
    after: tuple[datetime, str] | None = None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


_SUMMARY_COLUMNS = (
    certificates.c.certificate_id, certificates.c.sha256, certificates.c.sequence,
    certificates.c.previous_hash, certificates.c.issued_at, certificates.c.received_at,
    certificates.c.outcome, certificates.c.category, certificates.c.platform,
    certificates.c.manufacturer, certificates.c.model, certificates.c.serial,
    certificates.c.development, certificates.c.client, certificates.c.booking_reference,
    stations.c.station_id,
    stations.c.organisation, stations.c.root_sha256,
)


def _summary(row: Any, imeis: list[str]) -> dict[str, Any]:
    return {
        "certificate_id": row.certificate_id, "sha256": row.sha256,
        "station_id": row.station_id, "organisation": row.organisation,
        "root_sha256": row.root_sha256, "sequence": row.sequence,
        "previous_hash": row.previous_hash, "issued_at": _iso(row.issued_at),
        "received_at": _iso(row.received_at), "outcome": row.outcome,
        "category": row.category, "platform": row.platform,
        "manufacturer": row.manufacturer, "model": row.model, "serial": row.serial,
        "imeis": imeis, "booking_reference": row.booking_reference,
        "development": row.development, "delivered_by": row.client,
        "links": {"certificate": f"/v1/certificates/{row.certificate_id}"},
    }


def _where(query: Select[Any], f: Filters) -> Select[Any]:
    c = certificates.c
    if f.certificate_id is not None:
        query = query.where(c.certificate_id == f.certificate_id)
    if f.imei is not None:
        query = query.where(c.certificate_id.in_(
            select(certificate_imeis.c.certificate_id)
            .where(certificate_imeis.c.imei == f.imei)))
    if f.serial is not None:
        query = query.where(c.serial == f.serial)
    if f.booking is not None:
        query = query.where(c.booking_reference == f.booking)
    if f.station_id is not None:
        query = query.where(stations.c.station_id == f.station_id)
    if f.root_sha256 is not None:
        query = query.where(stations.c.root_sha256 == f.root_sha256)
    if f.outcome is not None:
        query = query.where(c.outcome == f.outcome)
    if f.issued_from is not None:
        query = query.where(c.issued_at >= f.issued_from)
    if f.issued_to is not None:
        query = query.where(c.issued_at < f.issued_to)
    if f.after is not None:
        at, cid = f.after
        query = query.where(or_(c.issued_at > at,
                                and_(c.issued_at == at, c.certificate_id > cid)))
    return query


async def _imeis(conn: AsyncConnection, ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {cid: [] for cid in ids}
    if ids:
        rows = await conn.execute(
            select(certificate_imeis.c.certificate_id, certificate_imeis.c.imei)
            .where(certificate_imeis.c.certificate_id.in_(ids))
            .order_by(certificate_imeis.c.imei))
        for cid, imei in rows:
            found[cid].append(imei)
    return found


async def search(conn: AsyncConnection, f: Filters, limit: int = 100) -> dict[str, Any]:
    """Certificates matching `f`, oldest issue first, at most `limit` (a page)."""
    limit = max(1, min(limit, MAX_LIMIT))
    query = _where(select(*_SUMMARY_COLUMNS)
                   .join(stations, stations.c.id == certificates.c.station), f)
    rows = (await conn.execute(
        query.order_by(certificates.c.issued_at, certificates.c.certificate_id)
        .limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    imeis = await _imeis(conn, [r.certificate_id for r in rows])
    items = [_summary(r, imeis[r.certificate_id]) for r in rows]
    cursor = None
    if more:
        last = rows[-1]
        cursor = f"{_iso(last.issued_at)}_{last.certificate_id}"
    return {"certificates": items, "count": len(items), "next_cursor": cursor}


async def certificate_data(conn: AsyncConnection, certificate_id: str
                           ) -> tuple[bytes, str] | None:
    """(signed bytes, station id) of a certificate, or None."""
    row = (await conn.execute(
        select(certificates.c.data, stations.c.station_id)
        .join(stations, stations.c.id == certificates.c.station)
        .where(certificates.c.certificate_id == certificate_id))).first()
    return None if row is None else (bytes(row.data), row.station_id)


def _problem_json(row: Any) -> dict[str, Any]:
    ids = [row.certificate_id] + ([row.other_certificate_id]
                                  if row.other_certificate_id else [])
    return {"kind": row.kind, "station_id": row.station_id, "sequence": row.sequence,
            "certificate_ids": ids, "message": row.message,
            "detected_at": _iso(row.detected_at)}


_PROBLEM_COLUMNS = (
    ledger_problems.c.kind, ledger_problems.c.sequence, ledger_problems.c.certificate_id,
    ledger_problems.c.other_certificate_id, ledger_problems.c.message,
    ledger_problems.c.detected_at, stations.c.station_id,
)


async def problems(conn: AsyncConnection, *, station_id: str | None = None,
                   kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Recorded ledger problems (fork, broken_link, duplicate_id), newest first."""
    query = select(*_PROBLEM_COLUMNS).join(stations, stations.c.id == ledger_problems.c.station)
    if station_id is not None:
        query = query.where(stations.c.station_id == station_id)
    if kind is not None:
        query = query.where(ledger_problems.c.kind == kind)
    rows = await conn.execute(query.order_by(ledger_problems.c.id.desc())
                              .limit(max(1, min(limit, MAX_LIMIT))))
    return [_problem_json(r) for r in rows]


def _station_json(row: Any, problem_count: int) -> dict[str, Any]:
    missing = row.max_sequence - row.sequences
    return {
        "station_id": row.station_id, "organisation": row.organisation,
        "root_sha256": row.root_sha256, "first_seen": _iso(row.first_seen),
        "last_seen": _iso(row.last_seen), "certificates": row.certificates,
        "highest_sequence": row.max_sequence, "missing": missing,
        "problems": problem_count,
        "complete": missing == 0 and problem_count == 0,
    }


async def _problem_counts(conn: AsyncConnection) -> dict[int, int]:
    rows = await conn.execute(select(ledger_problems.c.station, func.count())
                              .group_by(ledger_problems.c.station))
    return {station: count for station, count in rows}


async def station_list(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every station with its ledger summary."""
    counts = await _problem_counts(conn)
    rows = await conn.execute(select(stations).order_by(stations.c.station_id,
                                                        stations.c.root_sha256))
    return [_station_json(r, counts.get(r.id, 0)) for r in rows]


async def ledger_report(conn: AsyncConnection, station_id: str,
                        root_sha256: str | None = None) -> list[dict[str, Any]]:
    """The ledger of a station (one report per organisation that has such a station):
    counts, the missing ranges, every recorded problem, and whether it is complete."""
    query = select(stations).where(stations.c.station_id == station_id)
    if root_sha256 is not None:
        query = query.where(stations.c.root_sha256 == root_sha256)
    reports = []
    for row in (await conn.execute(query.order_by(stations.c.root_sha256))).all():
        found = (await conn.execute(
            select(*_PROBLEM_COLUMNS)
            .join(stations, stations.c.id == ledger_problems.c.station)
            .where(ledger_problems.c.station == row.id)
            .order_by(ledger_problems.c.id))).all()
        report = _station_json(row, len(found))
        missing = report["missing"]
        report["gaps"] = [{"first": a, "last": b} for a, b in await gaps(conn, row.id)] \
            if missing else []
        report["gaps_truncated"] = len(report["gaps"]) >= MAX_GAP_RANGES
        report["recorded_problems"] = [_problem_json(p) for p in found]
        reports.append(report)
    return reports


async def public_lookup(conn: AsyncConnection, certificate_id: str, sha256: str
                        ) -> dict[str, Any] | None:
    """The certificate for the verification page, only when id AND hash match."""
    row = (await conn.execute(
        select(certificates.c.data, certificates.c.received_at, certificates.c.station)
        .where(certificates.c.certificate_id == certificate_id,
               certificates.c.sha256 == sha256))).first()
    if row is None:
        return None
    kinds = (await conn.execute(
        select(ledger_problems.c.kind).where(involving(certificate_id)).distinct()
    )).scalars().all()
    return {
        "certificate": bytes(row.data).decode("ascii"),
        "received_at": _iso(row.received_at),
        "ledger": {"status": "problems" if kinds else "ok", "problems": sorted(kinds)},
    }
