"""`wipeagent demo --platform`: a reference receiver on an ephemeral loopback port.

    async with DemoPlatform(state_dir, clock, station_id=...) as platform:
        report = await platform.deliver(store)       # after the bench finished, or
        uplink = platform.uplink(store)              # run it beside the agent
    print(report.summary("the reference receiver"))

Everything is development material made in the state directory: the receiver's server
certificate (its own throwaway CA), the bench's uplink client certificate (from the
development CA of `ensure_dev_pki`, which must exist: build the agent first), and the
receiver trusts that development CA for both mutual TLS and certificate verification.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from wipeagent.certs.pki import CA_CERT, dev_trust_root
from wipeagent.clock import Clock
from wipeagent.store import Store
from wipeagent.uplink.client import DeliveryReport, Uplink, UplinkSettings, deliver_all
from wipeagent.uplink.receiver import Receiver
from wipeagent.uplink.tls import (
    client_context,
    ensure_dev_client_tls,
    ensure_dev_server_tls,
    server_context,
)


class DemoPlatform:
    """A running reference receiver plus the uplink TLS set-up that reaches it."""

    def __init__(self, state_dir: Path, clock: Clock, *, station_id: str = "dev-station"
                 ) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.station_id = station_id
        self.receiver: Receiver | None = None
        self.client_ssl: ssl.SSLContext | None = None

    @property
    def store_dir(self) -> Path:
        """Where the receiver keeps what it accepted."""
        return self.state_dir / "platform" / "received"

    async def __aenter__(self) -> DemoPlatform:
        dev_pki = self.state_dir / "dev-pki"
        server = ensure_dev_server_tls(self.state_dir / "platform" / "tls")
        client = ensure_dev_client_tls(dev_pki, station_id=self.station_id)
        self.client_ssl = client_context(ca=server.ca, cert=client.cert, key=client.key)
        context = server_context(cert=server.cert, key=server.key,
                                 client_ca=dev_pki / "ca" / CA_CERT)
        self.receiver = await Receiver(self.store_dir, [dev_trust_root(dev_pki)],
                                       ssl_context=context, clock=self.clock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
            self.receiver = None

    def _ready(self) -> tuple[Receiver, ssl.SSLContext]:
        if self.receiver is None or self.client_ssl is None:
            raise RuntimeError("DemoPlatform is not started (use `async with`)")
        return self.receiver, self.client_ssl

    def settings(self) -> UplinkSettings:
        """Demo uplink settings: short back-off (bench seconds)."""
        receiver, _ = self._ready()
        return UplinkSettings(url=receiver.url, timeout_s=30, backoff_initial_s=1,
                              backoff_max_s=30, poll_interval_s=5)

    def uplink(self, store: Store) -> Uplink:
        """An Uplink to run beside the agent (`asyncio.create_task(uplink.run())`)."""
        _, context = self._ready()
        return Uplink(store, self.clock, self.settings(), context)

    async def deliver(self, store: Store, timeout_s: float = 600.0) -> DeliveryReport:
        """Deliver everything in the journal's outbox to the receiver."""
        receiver, context = self._ready()
        return await deliver_all(store, url=receiver.url, ssl_context=context,
                                 clock=self.clock, timeout_s=timeout_s,
                                 settings=self.settings())
