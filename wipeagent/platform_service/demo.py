"""`wipeagent demo --platform`: the platform service on ephemeral loopback ports.

    async with DemoPlatform(state_dir, clock, station_id=...) as platform:
        config = ... verification_url=platform.verify_url ...   # QR links point here
        report = await platform.deliver(store)       # after the bench finished, or
        uplink = platform.uplink(store)              # run it beside the agent
        print(platform.link(certificate))            # what a phone's QR code opens

The service runs over SQLite in `state_dir/platform/` (the embedded default; PostgreSQL
is for real platforms and the fleet benchmark). Everything is development material made
in the state directory: the service's server certificate (its own throwaway CA), the
bench's uplink client certificate (from the development CA of `ensure_dev_pki`, made
here if the agent has not made it yet), and the service trusts that development CA for
mutual TLS and for certificate verification. The public routes (page, lookup) are on a
plain-HTTP loopback listener, which browsers treat as a secure context (WebCrypto works).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from urllib.parse import urlencode

from wipeagent.certs.pki import CA_CERT, dev_trust_root, ensure_dev_pki
from wipeagent.clock import Clock
from wipeagent.platform_service.app import PlatformService, PlatformSettings, tls_context
from wipeagent.platform_service.db import database_url, migrate
from wipeagent.store import CertificateRow, Store
from wipeagent.uplink.client import DeliveryReport, Uplink, UplinkSettings, deliver_all
from wipeagent.uplink.tls import client_context, ensure_dev_client_tls, ensure_dev_server_tls


class DemoPlatform:
    """A running platform service plus the uplink TLS set-up that reaches it."""

    def __init__(self, state_dir: Path, clock: Clock, *, station_id: str = "dev-station"
                 ) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.station_id = station_id
        self.service: PlatformService | None = None
        self.client_ssl: ssl.SSLContext | None = None

    @property
    def directory(self) -> Path:
        """Where the service keeps its database and TLS files."""
        return self.state_dir / "platform"

    async def __aenter__(self) -> DemoPlatform:
        dev_pki = self.state_dir / "dev-pki"
        # The development CA (and this station's signing key, as the agent makes it).
        await asyncio.to_thread(ensure_dev_pki, dev_pki, station_id=self.station_id)
        server = ensure_dev_server_tls(self.directory / "tls")
        client = ensure_dev_client_tls(dev_pki, station_id=self.station_id)
        self.client_ssl = client_context(ca=server.ca, cert=client.cert, key=client.key)
        url = database_url(f"sqlite:///{self.directory / 'platform.sqlite3'}")
        await asyncio.to_thread(migrate, url)
        root = dev_trust_root(dev_pki)
        settings = PlatformSettings(database=url, trust_roots=[root], client_roots=[root])
        context = tls_context(cert=server.cert, key=server.key,
                              client_cas=[dev_pki / "ca" / CA_CERT])
        self.service = await PlatformService(settings, clock=Clock()).start(
            ssl_context=context, public=("127.0.0.1", 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    def _ready(self) -> tuple[PlatformService, ssl.SSLContext]:
        if self.service is None or self.client_ssl is None:
            raise RuntimeError("DemoPlatform is not started (use `async with`)")
        return self.service, self.client_ssl

    @property
    def verify_url(self) -> str:
        """The verification page (a bench's `certificates.verification_url`)."""
        return self._ready()[0].verify_url

    def link(self, certificate: CertificateRow) -> str:
        """The link a certificate's QR code carries."""
        query = urlencode({"id": certificate.certificate_id, "sha256": certificate.sha256})
        return f"{self.verify_url}?{query}"

    def settings(self) -> UplinkSettings:
        """Demo uplink settings: short back-off (bench seconds)."""
        service, _ = self._ready()
        return UplinkSettings(url=service.ingest_url, timeout_s=30, backoff_initial_s=1,
                              backoff_max_s=30, poll_interval_s=5)

    def uplink(self, store: Store) -> Uplink:
        """An Uplink to run beside the agent (`asyncio.create_task(uplink.run())`)."""
        _, context = self._ready()
        return Uplink(store, self.clock, self.settings(), context)

    async def deliver(self, store: Store, timeout_s: float = 600.0) -> DeliveryReport:
        """Deliver everything in the journal's outbox to the service."""
        service, context = self._ready()
        return await deliver_all(store, url=service.ingest_url, ssl_context=context,
                                 clock=self.clock, timeout_s=timeout_s,
                                 settings=self.settings())

    async def held(self) -> dict[str, bytes]:
        """Every certificate the service holds, by id."""
        from sqlalchemy import select

        from wipeagent.platform_service.db import certificates

        service, _ = self._ready()
        async with service.engine.connect() as conn:
            rows = await conn.execute(select(certificates.c.certificate_id,
                                             certificates.c.data))
            return {cid: bytes(data) for cid, data in rows}
