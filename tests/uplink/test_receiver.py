"""The reference receiver's answers (docs/ingest-api.md), spoken to over mutual TLS."""

from __future__ import annotations

import json
import ssl

import aiohttp
import pytest
from uplink_fixtures import Bench

from wipeagent.uplink.client import MEDIA_TYPE
from wipeagent.uplink.tls import client_context


async def post(bench: Bench, url: str, data: bytes, *, key: str | None,
               content_type: str = MEDIA_TYPE,
               context: ssl.SSLContext | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    connector = aiohttp.TCPConnector(ssl=context or bench.client_ssl)
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.post(url, data=data, headers=headers) as response:
        return response.status, json.loads(await response.read())


async def test_created_then_already_held(bench: Bench) -> None:
    (row,) = await bench.issue(1)
    async with bench.receiver() as receiver:
        status, body = await post(bench, receiver.url, row.data, key=row.certificate_id)
        assert status == 201
        assert body["certificate_id"] == row.certificate_id and body["sha256"] == row.sha256
        status, body = await post(bench, receiver.url, row.data, key=row.certificate_id)
        assert status == 200 and body["status"] == "already_held"
        assert receiver.held() == {row.certificate_id: row.data}


async def test_same_id_other_content_is_a_conflict(bench: Bench) -> None:
    a, b = await bench.issue(2)
    async with bench.receiver() as receiver:
        # The platform already holds other bytes under a's id (planted directly).
        receiver.path_for(a.certificate_id).write_bytes(b.data)
        status, body = await post(bench, receiver.url, a.data, key=a.certificate_id)
        assert status == 409 and body["error"] == "conflict"
        assert receiver.held()[a.certificate_id] == b.data  # never overwritten


@pytest.mark.parametrize(("data", "status", "reason"), [
    (b"not json", 400, "malformed"),
    (b'{"payload":"","protected":"","signature":""}', 400, "bad_header"),
    (b'{"payload":"e30","protected":"eyJhbGciOiJub25lIn0","signature":""}', 400,
     "unsupported_alg"),
])
async def test_malformed_bodies(bench: Bench, data: bytes, status: int, reason: str) -> None:
    (row,) = await bench.issue(1)
    async with bench.receiver() as receiver:
        got, body = await post(bench, receiver.url, data, key=row.certificate_id)
        assert (got, body["reason"]) == (status, reason)
        assert receiver.held() == {}


async def test_unverifiable_certificate_is_422_with_reason(bench: Bench) -> None:
    (row,) = await bench.issue(1)
    doc = json.loads(row.data)
    doc["signature"] = ("A" if doc["signature"][0] != "A" else "B") + doc["signature"][1:]
    async with bench.receiver() as receiver:
        status, body = await post(bench, receiver.url,
                                  json.dumps(doc, separators=(",", ":")).encode(),
                                  key=row.certificate_id)
        assert (status, body["reason"]) == (422, "bad_signature")


async def test_untrusted_root_is_422(bench: Bench, tmp_path_factory: pytest.TempPathFactory
                                     ) -> None:
    from uplink_fixtures import make_bench

    from wipeagent.store import Store

    other_root = tmp_path_factory.mktemp("other")
    async with Store(other_root / "j.sqlite3") as store:
        other = make_bench(other_root, store)
        (row,) = await other.issue(1)
    async with bench.receiver() as receiver:
        status, body = await post(bench, receiver.url, row.data, key=row.certificate_id)
        assert (status, body["reason"]) == (422, "untrusted_root")


async def test_idempotency_key_must_be_the_certificate_id(bench: Bench) -> None:
    a, b = await bench.issue(2)
    async with bench.receiver() as receiver:
        status, body = await post(bench, receiver.url, a.data, key=None)
        assert (status, body["error"]) == (400, "idempotency_key")
        status, body = await post(bench, receiver.url, a.data, key=b.certificate_id)
        assert (status, body["error"]) == (400, "idempotency_key")
        status, body = await post(bench, receiver.url, a.data, key="../../etc/passwd")
        assert (status, body["error"]) == (400, "idempotency_key")
        assert receiver.held() == {}


async def test_wrong_media_type_and_oversize(bench: Bench) -> None:
    (row,) = await bench.issue(1)
    async with bench.receiver() as receiver:
        status, _ = await post(bench, receiver.url, row.data, key=row.certificate_id,
                               content_type="text/plain")
        assert status == 415
        status, body = await post(bench, receiver.url, b"x" * (600 * 1024),
                                  key=row.certificate_id)
        assert status == 413 and body["error"] == "too_large"


async def test_client_certificate_is_required(bench: Bench) -> None:
    (row,) = await bench.issue(1)
    no_cert = client_context(ca=bench.root / "server-tls" / "platform-ca.pem",
                             cert=None, key=None)
    async with bench.receiver() as receiver:
        with pytest.raises(aiohttp.ClientError):
            await post(bench, receiver.url, row.data, key=row.certificate_id, context=no_cert)
        assert receiver.held() == {}


async def test_client_refuses_an_unknown_server(bench: Bench) -> None:
    """The uplink verifies the platform: a server its CA did not sign gets nothing."""
    from wipeagent.uplink.client import UplinkSettings, deliver_all

    await bench.issue(1)
    wrong = client_context(ca=bench.root / "dev-pki" / "ca" / "ca.pem",
                           cert=bench.root / "dev-pki" / "uplink" / "uplink.pem",
                           key=bench.root / "dev-pki" / "uplink" / "uplink.key")
    async with bench.receiver() as receiver:
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=wrong,
                                   clock=bench.clock, timeout_s=30,
                                   settings=UplinkSettings(url=receiver.url,
                                                           backoff_initial_s=5))
        assert not report.finished and report.pending == 1
        assert receiver.requests == 0
        (item,) = await bench.store.run(lambda db: db.execute(
            "SELECT last_error FROM deliveries").fetchall())
        assert "TLS" in item[0] or "certificate" in item[0].lower()
