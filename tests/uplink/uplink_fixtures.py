"""Helpers for the uplink tests: a journal with real signed certificates (development
PKI), the reference receiver over mutual TLS on 127.0.0.1, and a fast bench clock.

Imported by this unique name (pytest puts tests/uplink on sys.path): every test folder has
its own `conftest`, so `from conftest import ...` can pick up another folder's."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wipeagent.certify import StoreCertifier
from wipeagent.certs.pki import dev_trust_root, ensure_dev_pki
from wipeagent.clock import Clock
from wipeagent.models import (
    DeviceIdentity,
    EncryptionType,
    Outcome,
    Platform,
    SessionRecord,
    StationInfo,
)
from wipeagent.store import CertificateRow, Store
from wipeagent.uplink.receiver import Receiver
from wipeagent.uplink.tls import (
    client_context,
    ensure_dev_client_tls,
    ensure_dev_server_tls,
    server_context,
)

SPEED = 200.0  # bench seconds per real second: a 5 s back-off takes 25 ms


def record(n: int) -> SessionRecord:
    """A small, valid session record (a refused phone: fewest fields)."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    return SessionRecord(
        session_id=f"s-{n:04d}",
        slot=f"slot-{n}",
        station=StationInfo(station_id="bench-01", site="test", organisation="Test Org",
                            tool_name="wipeagent", tool_version="0.1.0"),
        operator="tech-1",
        started_at=now,
        ended_at=now + timedelta(seconds=30),
        identity=DeviceIdentity(
            platform=Platform.ANDROID, manufacturer="Google", model="Pixel 8",
            serial=f"SERIAL{n:04d}", os_name="Android", os_version="14",
            encryption=EncryptionType.FILE_BASED,
        ),
        outcome=Outcome.NOT_ERASED,
        reasons=("a Google account is signed in",),
    )


@dataclass
class Bench:
    """A journal and the TLS material for both ends."""

    root: Path
    store: Store
    certifier: StoreCertifier
    clock: Clock
    client_ssl: ssl.SSLContext
    server_ssl: ssl.SSLContext
    trust: list[object]
    issued: int = 0

    async def issue(self, count: int = 1) -> list[CertificateRow]:
        """Issue `count` more certificates into the journal."""
        rows = []
        for _ in range(count):
            self.issued += 1
            rec = record(self.issued)
            await self.store.create_session(rec.session_id, rec.slot)
            rows.append(await self.certifier.certify(rec))
        return rows

    def receiver(self, **kw: object) -> Receiver:
        return Receiver(self.root / "received", self.trust,  # type: ignore[arg-type]
                        ssl_context=self.server_ssl, clock=self.clock, **kw)  # type: ignore[arg-type]


def make_bench(root: Path, store: Store) -> Bench:
    signer = ensure_dev_pki(root / "dev-pki", station_id="bench-01")
    client = ensure_dev_client_tls(root / "dev-pki", station_id="bench-01")
    server = ensure_dev_server_tls(root / "server-tls")
    certifier = StoreCertifier(store, signer, out_dir=root / "certificates", development=True)
    return Bench(
        root=root, store=store, certifier=certifier, clock=Clock(SPEED),
        client_ssl=client_context(ca=server.ca, cert=client.cert, key=client.key),
        server_ssl=server_context(cert=server.cert, key=server.key,
                                  client_ca=root / "dev-pki" / "ca" / "ca.pem"),
        trust=[dev_trust_root(root / "dev-pki")],
    )







async def eventually(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (real seconds) until `predicate()` holds; fail the test otherwise."""
    import asyncio

    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - the state lives in other objects
            await asyncio.sleep(0.01)
