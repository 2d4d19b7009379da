"""Ingest into the platform service: stored once, mutual TLS bound to the station, ledger
continuity flagged (gap, fork, broken link, duplicate id) — on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from fleet import Org, resign
from platform_fixtures import Platform, start_platform
from sqlalchemy import func, select

from wipeagent.platform_service.db import certificates, ledger_problems


async def _count(platform: Platform, table: object) -> int:
    async with platform.service.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_ingest_is_idempotent(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    cert = bench.issue()
    status, receipt = await platform.post(bench, cert)
    assert status == 201
    assert receipt["certificate_id"] == cert.certificate_id
    assert receipt["sha256"] == cert.sha256 and receipt["status"] == "created"
    assert receipt["ledger"] == {"status": "ok", "problems": [], "missing": 0, "gaps": []}
    again, repeat = await platform.post(bench, cert)
    assert again == 200 and repeat["status"] == "already_held"
    assert repeat["received_at"] == receipt["received_at"]
    assert await _count(platform, certificates) == 1
    # What is held is the very bytes that were signed.
    status, body = await platform.get(f"/v1/certificates/{cert.certificate_id}")
    assert status == 200 and body == cert.data


async def test_same_id_other_content_is_refused_and_kept_as_evidence(
        platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    cert = bench.issue()
    assert (await platform.post(bench, cert))[0] == 201
    twin = resign(bench, cert, destination="recycling")
    status, body = await platform.post(bench, twin, key=cert.certificate_id)
    assert status == 409 and body["error"] == "conflict" and body["sha256"] == cert.sha256
    status, found = await platform.get("/v1/ledger/problems", params={"kind": "duplicate_id"})
    assert status == 200
    assert [p["certificate_ids"] for p in found["problems"]] == [[cert.certificate_id]]
    async with platform.service.engine.connect() as conn:
        evidence = (await conn.execute(select(ledger_problems.c.evidence))).scalar_one()
    assert evidence == twin
    # The held certificate is untouched.
    assert (await platform.get(f"/v1/certificates/{cert.certificate_id}"))[1] == cert.data


async def test_gap_is_reported_then_closes(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    one, two, three = bench.issue(), bench.issue(), bench.issue()
    await platform.post(bench, one)
    status, receipt = await platform.post(bench, three)
    assert status == 201  # stored: the missing one may still come
    assert receipt["ledger"]["status"] == "problems"
    assert receipt["ledger"]["missing"] == 1
    assert receipt["ledger"]["gaps"] == [{"first": 2, "last": 2}]
    _, report = await platform.get("/v1/stations/bench-01/ledger")
    (ledger,) = report["ledgers"]
    assert ledger["complete"] is False and ledger["gaps"] == [{"first": 2, "last": 2}]
    status, receipt = await platform.post(bench, two)
    assert receipt["ledger"]["status"] == "ok"
    _, report = await platform.get("/v1/stations/bench-01/ledger")
    (ledger,) = report["ledgers"]
    assert ledger["complete"] is True and ledger["gaps"] == []
    assert ledger["certificates"] == 3 and ledger["highest_sequence"] == 3


async def test_missing_first_certificates_are_a_gap(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    bench.issue(), bench.issue()
    third = bench.issue()
    _, receipt = await platform.post(bench, third)
    assert receipt["ledger"]["gaps"] == [{"first": 1, "last": 2}]


async def test_fork_is_stored_and_flagged(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    one = bench.issue()
    two = bench.issue()
    # A second certificate at sequence 2 (a restored journal, a cloned station key).
    other = bench.issue(sequence=2, previous_hash=one.sha256)
    for cert in (one, two):
        assert (await platform.post(bench, cert))[0] == 201
    status, receipt = await platform.post(bench, other)
    assert status == 201
    (problem,) = receipt["ledger"]["problems"]
    assert problem["kind"] == "fork" and problem["sequence"] == 2
    assert set(problem["certificate_ids"]) == {two.certificate_id, other.certificate_id}
    _, found = await platform.get("/v1/ledger/problems", params={"station": "bench-01"})
    assert [p["kind"] for p in found["problems"]] == ["fork"]
    _, stations = await platform.get("/v1/stations")
    (station,) = stations["stations"]
    assert station["complete"] is False and station["problems"] == 1
    assert station["missing"] == 0 and station["certificates"] == 3
    # The public lookup says the certificate is part of a ledger problem.
    _, body, _ = await platform.public(
        f"/v1/public/certificates/{other.certificate_id}/{other.sha256}")
    assert body["ledger"] == {"status": "problems", "problems": ["fork"]}


async def test_broken_link_is_flagged(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    one = bench.issue()
    stray = bench.issue(sequence=2, previous_hash="ab" * 32)
    await platform.post(bench, one)
    _, receipt = await platform.post(bench, stray)
    assert [p["kind"] for p in receipt["ledger"]["problems"]] == ["broken_link"]
    # The other way round: the successor is held first, its predecessor arrives.
    bench2 = acme.station("bench-02")
    first = bench2.issue()
    second = bench2.issue(sequence=2, previous_hash="cd" * 32)
    await platform.post(bench2, second)
    _, receipt = await platform.post(bench2, first)
    (problem,) = receipt["ledger"]["problems"]
    assert problem["kind"] == "broken_link" and problem["sequence"] == 2


async def test_upload_needs_a_client_certificate(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    status, body = await platform.post(None, bench.issue())
    assert (status, body["error"]) == (403, "client_certificate_required")
    assert await _count(platform, certificates) == 0


async def test_client_of_another_station_is_refused(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    intruder = acme.station("intruder-bench")
    status, body = await platform.post(intruder, bench.issue())
    assert (status, body["error"]) == (403, "station_mismatch")
    # A look-alike client name (Cyrillic "е" in "bench") is another station, too.
    lookalike = acme.station("lookalike", client_id="b\u0435nch-01")
    refused = bench.issue(sequence=1, previous_hash=None)
    assert (await platform.post(lookalike, refused))[1]["error"] == "station_mismatch"
    assert await _count(platform, certificates) == 0


async def test_station_of_another_organisation_is_refused(tmp_path: Path, db_url: str,
                                                          acme: Org) -> None:
    other = Org.create(tmp_path / "other", "Other Refurb")
    platform = await start_platform(tmp_path, db_url, [acme, other])
    try:
        ours = acme.station("bench-01")
        theirs = other.station("bench-01")  # same station id, other organisation
        refused = ours.issue(sequence=1, previous_hash=None)  # ours' head stays at 0
        status, body = await platform.post(theirs, refused)
        assert (status, body["error"]) == (403, "organisation_mismatch")
        # Each organisation's bench-01 has its own ledger.
        assert (await platform.post(theirs, theirs.issue()))[0] == 201
        assert (await platform.post(ours, ours.issue()))[0] == 201
        _, report = await platform.get("/v1/stations/bench-01/ledger")
        assert sorted(r["organisation"] for r in report["ledgers"]) == [
            "Acme Refurb", "Other Refurb"]
        assert all(r["complete"] for r in report["ledgers"])
    finally:
        await platform.service.stop()


async def test_invalid_certificates_are_refused(platform: Platform, acme: Org) -> None:
    bench = acme.station("bench-01")
    cert = bench.issue()
    flipped = bytearray(cert.data)
    flipped[40] ^= 0x01
    status, body = await platform.post(bench, bytes(flipped), key=cert.certificate_id)
    assert status in (400, 422) and body["error"] == "invalid_certificate"
    status, body = await platform.post(bench, cert.data, key="0" * 8 + "-0000-7000-8000-" +
                                       "0" * 12)
    assert (status, body["error"]) == (400, "idempotency_key")
    assert await _count(platform, certificates) == 0
