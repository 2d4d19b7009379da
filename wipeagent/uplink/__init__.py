"""Certificates from the journal to the platform, exactly once.

- outbox.py: the `deliveries` table beside the journal's certificates (the outbox is every
  certificate without a receipt; there is no second copy).
- client.py: `Uplink` (POST with mutual TLS, Idempotency-Key, back-off, Retry-After,
  parking of permanent refusals) and `deliver_all` for the demo.
- ingest.py: the ingest API's request rules (mutual TLS bound to the station), shared by
  the reference receiver and the platform service (wipeagent.platform_service).
- receiver.py: the reference ingest server (docs/ingest-api.md) for tests.
- tls.py: the uplink's TLS client certificate (clientAuth) and SSL contexts.
- cli.py: `wipeagent outbox`, `receiver`, `uplink-key`, `uplink-sign`.
"""

from wipeagent.uplink.client import (
    DeliveryReport,
    Uplink,
    UplinkSettings,
    deliver_all,
    uplink_from_config,
)
from wipeagent.uplink.outbox import Outbox, OutboxCounts, OutboxItem

__all__ = [
    "DeliveryReport",
    "Outbox",
    "OutboxCounts",
    "OutboxItem",
    "Uplink",
    "UplinkSettings",
    "deliver_all",
    "uplink_from_config",
]
