"""The engineers' query API (bearer token), the public lookup (id AND hash, rate-limited),
health, and the schema migrations — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fleet import Org
from platform_fixtures import Platform
from sqlalchemy import create_engine

from wipeagent.models import Outcome
from wipeagent.platform_service.db import (
    alembic_config,
    current_revision,
    database_url,
    head_revision,
    metadata,
    migrate,
)
from wipeagent.platform_service.tokens import revoke_token


async def _fleet(platform: Platform, acme: Org) -> dict[str, list[str]]:
    """Two stations, five certificates with known serials, IMEIs, outcomes and days."""
    a, b = acme.station("bench-a"), acme.station("bench-b")
    day1 = datetime.now(UTC) - timedelta(days=3)
    day2 = datetime.now(UTC) - timedelta(days=1)
    made = {
        "a1": a.issue(serial="SER-A1", imei="356789012345678", issued_at=day1),
        "a2": a.issue(serial="SER-A2", imei="356789012345686", issued_at=day2,
                      outcome=Outcome.NOT_ERASED),
        "a3": a.issue(serial="SER-SHARED", imei="356789012345694", issued_at=day2),
        "b1": b.issue(serial="SER-B1", imei="356789012345702", issued_at=day1,
                      outcome=Outcome.NOT_ERASED),
        "b2": b.issue(serial="SER-SHARED", imei="356789012345710", issued_at=day2),
    }
    for name, cert in made.items():
        station = a if name.startswith("a") else b
        assert (await platform.post(station, cert))[0] == 201
    return {name: [c.certificate_id] for name, c in made.items()}


def _ids(body: dict[str, object]) -> set[str]:
    return {c["certificate_id"] for c in body["certificates"]}  # type: ignore[attr-defined, index]


async def test_queries(platform: Platform, acme: Org) -> None:
    ids = await _fleet(platform, acme)
    by = {k: v[0] for k, v in ids.items()}

    async def find(**params: str) -> set[str]:
        status, body = await platform.get("/v1/certificates", params=params)
        assert status == 200, body
        return _ids(body)

    assert await find(id=by["a2"]) == {by["a2"]}
    assert await find(imei="356789012345702") == {by["b1"]}
    assert await find(serial="SER-SHARED") == {by["a3"], by["b2"]}
    assert await find(station="bench-a") == {by["a1"], by["a2"], by["a3"]}
    assert await find(outcome="not_erased") == {by["a2"], by["b1"]}
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    assert await find(**{"from": two_days_ago}) == {by["a2"], by["a3"], by["b2"]}
    assert await find(to=two_days_ago) == {by["a1"], by["b1"]}
    assert await find(station="bench-b", outcome="erased") == {by["b2"]}
    assert await find(imei="000000000000000") == set()
    # The summary carries the facts a platform engineer asks about.
    _, body = await platform.get("/v1/certificates", params={"id": by["b1"]})
    (row,) = body["certificates"]
    assert row["station_id"] == "bench-b" and row["serial"] == "SER-B1"
    assert row["imeis"] == ["356789012345702"] and row["outcome"] == "not_erased"
    assert row["organisation"] == "Acme Refurb" and row["sequence"] == 1
    # Pages: two at a time, in issue order, every certificate exactly once.
    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        _, page = await platform.get("/v1/certificates", params=params)
        seen += [c["certificate_id"] for c in page["certificates"]]
        if not page["next_cursor"]:
            break
        params = {"limit": "2", "cursor": page["next_cursor"]}
    assert sorted(seen) == sorted(by.values()) and len(seen) == 5
    # Bad parameters are refused, not ignored.
    status, body = await platform.get("/v1/certificates", params={"outcome": "wiped"})
    assert (status, body["error"]) == (400, "bad_parameter")


async def test_query_by_booking_reference(platform: Platform, acme: Org) -> None:
    """A trade-in order's certificates: every certificate whose intake section carries
    the booking reference (a phone refused, then erased on a second pass), and no other."""
    a, b = acme.station("bench-a"), acme.station("bench-b")
    first = a.issue(serial="SER-TI1", imei="356789012345728", booking="TI-1042",
                    outcome=Outcome.NOT_ERASED)
    again = b.issue(serial="SER-TI1", imei="356789012345728", booking="TI-1042")
    other = a.issue(serial="SER-TI2", imei="356789012345736", booking="TI-1043")
    unbooked = a.issue(serial="SER-NONE")
    for station, cert in ((a, first), (b, again), (a, other), (a, unbooked)):
        assert (await platform.post(station, cert))[0] == 201

    status, body = await platform.get("/v1/certificates", params={"booking": "TI-1042"})
    assert status == 200, body
    # Oldest issue first: the refusal, then the erase on the other bench.
    assert [c["certificate_id"] for c in body["certificates"]] == [
        first.certificate_id, again.certificate_id]
    assert [c["outcome"] for c in body["certificates"]] == ["not_erased", "erased"]
    assert {c["booking_reference"] for c in body["certificates"]} == {"TI-1042"}
    # ANDed with the other filters like any of them.
    _, body = await platform.get("/v1/certificates",
                                 params={"booking": "TI-1042", "station": "bench-b"})
    assert _ids(body) == {again.certificate_id}
    _, body = await platform.get("/v1/certificates", params={"booking": "TI-1043"})
    assert _ids(body) == {other.certificate_id}
    # Exact match: neither a prefix nor another case finds it.
    for near in ("TI-104", "ti-1042", "TI-1042 "):
        _, body = await platform.get("/v1/certificates", params={"booking": near})
        assert body["certificates"] == [], near
    _, body = await platform.get("/v1/certificates", params={"id": unbooked.certificate_id})
    assert body["certificates"][0]["booking_reference"] is None
    # Not a reference the schema allows: refused, not ignored (which would list all).
    for bad in ("", "x" * 101, "TI-\u00e91"):
        status, body = await platform.get("/v1/certificates", params={"booking": bad})
        assert (status, body["error"]) == (400, "bad_parameter"), bad
    status, body = await platform.get("/v1/certificates", params={"booking": "TI-1042"},
                                      token=None)
    assert status == 401


async def test_migration_finds_the_bookings_of_certificates_already_held(
        db_url: str, platform: Platform, acme: Org) -> None:
    """Certificates ingested before migration 0002 are searchable by booking after it:
    the migration reads each held certificate's intake section."""
    bench = acme.station("bench-a")
    booked = [bench.issue(booking=f"TI-{n}") for n in range(3)] + [bench.issue()]
    for cert in booked:
        assert (await platform.post(bench, cert))[0] == 201
    url = database_url(db_url)
    await platform.service.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0001")
    assert await asyncio.to_thread(current_revision, url) == "0001"
    await asyncio.to_thread(migrate, url)
    await platform.service.engine.dispose()  # pooled connections knew the old table
    for n, cert in enumerate(booked[:3]):
        _, body = await platform.get("/v1/certificates", params={"booking": f"TI-{n}"})
        assert _ids(body) == {cert.certificate_id}
    _, body = await platform.get("/v1/certificates", params={"station": "bench-a"})
    assert [c["booking_reference"] for c in body["certificates"]] == [
        "TI-0", "TI-1", "TI-2", None]


async def test_queries_need_a_valid_token(platform: Platform, acme: Org) -> None:
    for path in ("/v1/certificates", "/v1/stations", "/v1/ledger/problems",
                 "/v1/stations/bench-a/ledger"):
        status, body = await platform.get(path, token=None)
        assert (status, body["error"]) == (401, "unauthorised"), path
        status, _ = await platform.get(path, token="wpt_" + "x" * 43)
        assert status == 401, path
    async with platform.service.engine.begin() as conn:
        assert await revoke_token(conn, "engineer", datetime.now(UTC))
    assert (await platform.get("/v1/stations"))[0] == 401
    # A station's client certificate is not an engineer's credential either.
    bench = acme.station("bench-a")
    assert (await platform.post(bench, bench.issue()))[0] == 201


async def test_public_lookup_needs_id_and_hash(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    cert = bench.issue()
    await platform.post(bench, cert)
    status, body, headers = await platform.public(
        f"/v1/public/certificates/{cert.certificate_id}/{cert.sha256}")
    assert status == 200
    assert body["certificate"].encode() == cert.data
    assert body["ledger"] == {"status": "ok", "problems": []}
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    wrong = ("0" if cert.sha256[0] != "0" else "1") + cert.sha256[1:]
    unknown = await platform.public(f"/v1/public/certificates/{cert.certificate_id}/{wrong}")
    assert unknown[0] == 404
    # Unknown id and wrong hash answer alike: nothing to learn by probing ids.
    other_id = cert.certificate_id[:-1] + ("0" if cert.certificate_id[-1] != "0" else "1")
    probe = await platform.public(f"/v1/public/certificates/{other_id}/{cert.sha256}")
    assert probe[:2] == unknown[:2]
    assert (await platform.public(f"/v1/public/certificates/{cert.certificate_id}"))[0] == 404
    assert (await platform.public("/v1/public/certificates/x/y"))[0] == 404
    # The engineers' API is not on the public listener.
    assert (await platform.public("/v1/certificates"))[0] in (404, 405)


async def test_public_lookup_is_rate_limited(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    cert = bench.issue()
    await platform.post(bench, cert)
    path = f"/v1/public/certificates/{cert.certificate_id}/{cert.sha256}"
    answers = [await platform.public(path) for _ in range(40)]  # burst is 30
    statuses = [a[0] for a in answers]
    assert statuses[:30] == [200] * 30
    assert 429 in statuses[30:]
    limited = next(a for a in answers if a[0] == 429)
    assert int(limited[2]["Retry-After"]) >= 1


async def test_trust_roots_page_and_health(platform: Platform, acme: Org) -> None:
    status, body, _ = await platform.public("/v1/public/trust-roots")
    (root,) = body["roots"]
    assert status == 200 and root["organisation"] == "Acme Refurb"
    assert root["development"] is False and "BEGIN CERTIFICATE" in root["pem"]
    status, page, headers = await platform.public("/verify")
    assert status == 200 and b"verify/assets/verify.js" in page
    assert headers["X-Frame-Options"] == "DENY"
    status, health, _ = await platform.public("/v1/health")
    assert status == 200 and health["ok"] is True and health["certificates"] == 0
    assert health["database"] in ("sqlite", "postgresql")


async def test_migrations_make_the_schema_the_code_expects(db_url: str,
                                                           platform: Platform) -> None:
    def compare() -> tuple[list[object], str | None]:
        engine = create_engine(database_url(db_url))
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(conn)
                return compare_metadata(context, metadata), context.get_current_revision()
        finally:
            engine.dispose()

    diff, revision = await asyncio.to_thread(compare)
    assert diff == [] and revision == head_revision()


def _documented(name: str) -> set[tuple[str, str]]:
    doc = (Path(__file__).parents[2] / "docs" / name).read_text()
    found: set[tuple[str, str]] = set()
    path = None
    for line in doc.splitlines():
        if line.startswith("  /"):
            path = line.strip().rstrip(":")
        elif path and line.startswith("    ") and line.strip().rstrip(":") in ("get", "post"):
            found.add((line.strip().rstrip(":").upper(), path))
        elif not line.startswith(" "):
            path = None
    return found


def test_openapi_documents_every_route(platform: Platform) -> None:
    """docs/openapi-ingest.yaml + docs/openapi-platform.yaml and the service stay in step."""
    documented = _documented("openapi-ingest.yaml") | _documented("openapi-platform.yaml")
    routes = {(r.method, r.resource.canonical) for r in platform.service.app().router.routes()
              if r.method != "HEAD" and r.resource is not None
              and not r.resource.canonical.startswith("/verify/assets")}
    assert routes == documented
