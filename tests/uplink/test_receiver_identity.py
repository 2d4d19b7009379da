"""Issue 10: the reference receiver takes certificates only from the station that signed
them: a TLS client certificate is required, and its CN must be the certificate's station."""

from __future__ import annotations

import ssl

from fleet import sign_client_unchecked
from test_receiver import post
from uplink_fixtures import Bench

from wipeagent.uplink.receiver import Receiver
from wipeagent.uplink.tls import client_context, new_client_key, sign_client


def _client_of(bench: Bench, station_id: str) -> ssl.SSLContext:
    directory = bench.root / f"client-{station_id}"
    request = new_client_key(directory, station_id=station_id)
    ca = bench.root / "dev-pki" / "ca"
    # pki refuses a non-ASCII station id; a careless CA might not (look-alike tests).
    issue = sign_client if station_id.isascii() else sign_client_unchecked
    cert = issue(request.csr, ca_key_path=ca / "ca.key", ca_cert_path=ca / "ca.pem",
                 out_path=directory / "uplink.pem")
    return client_context(ca=bench.root / "server-tls" / "platform-ca.pem", cert=cert,
                          key=request.key)


async def test_client_of_another_station_is_refused(bench: Bench) -> None:
    (row,) = await bench.issue(1)  # station bench-01
    async with bench.receiver() as receiver:
        status, body = await post(bench, receiver.url, row.data, key=row.certificate_id,
                                  context=_client_of(bench, "intruder-bench"))
        assert (status, body["error"]) == (403, "station_mismatch")
        assert body["station_id"] == "bench-01"
        # A look-alike with a Cyrillic "е" is another station.
        status, body = await post(bench, receiver.url, row.data, key=row.certificate_id,
                                  context=_client_of(bench, "b\u0435nch-01"))
        assert status == 403
        assert receiver.held() == {}
        status, _ = await post(bench, receiver.url, row.data, key=row.certificate_id)
        assert status == 201


async def test_upload_without_client_certificate_is_refused(bench: Bench) -> None:
    (row,) = await bench.issue(1)
    optional = bench.server_ssl
    optional.verify_mode = ssl.CERT_OPTIONAL  # let the handshake through: the rule refuses
    receiver = Receiver(bench.root / "received", bench.trust,  # type: ignore[arg-type]
                        ssl_context=optional, clock=bench.clock)
    async with receiver:
        anonymous = ssl.create_default_context(
            cafile=str(bench.root / "server-tls" / "platform-ca.pem"))
        status, body = await post(bench, receiver.url, row.data, key=row.certificate_id,
                                  context=anonymous)
        assert (status, body["error"]) == (403, "client_certificate_required")
        assert receiver.held() == {}
