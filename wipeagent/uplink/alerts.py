"""Delivery alerts: what a technician or a monitoring system must hear about the outbox.

One assessment, shown in three places: the control API's `GET /status` (`delivery`, and
`wipeagent status`), the Prometheus metrics (`wipeagent_delivery_alert{alert}`), and the
log (the uplink logs each alert when it starts). The alerts:

- `certificates_parked` (error): certificates the platform refused for good or that kept
  failing while others went through. Nothing resends them until a technician re-queues
  them (`wipeagent outbox list`, then `wipeagent outbox requeue ID|--all`).
- `certificates_failing` (warning): certificates whose last `alert_after_failures`
  attempts or more all failed; each is retried on its own back-off, the others go on.
- `platform_failing` (warning): the last `alert_after_failures` attempts or more
  delivered nothing, and not because of one certificate alone: the platform could not be
  reached (down, unreachable, TLS refused) or failed more than one certificate.
- `uplink_not_configured` (info): certificates wait and `uplink.url` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from wipeagent.store import Store
from wipeagent.uplink.outbox import Outbox, OutboxHealth

AlertCode = Literal["certificates_parked", "certificates_failing", "platform_failing",
                    "uplink_not_configured"]
ALERT_CODES: tuple[AlertCode, ...] = ("certificates_parked", "certificates_failing",
                                      "platform_failing", "uplink_not_configured")


@dataclass(frozen=True)
class Alert:
    """One condition someone should act on."""

    code: AlertCode
    level: Literal["error", "warning", "info"]
    message: str
    hint: str

    def as_dict(self) -> dict[str, str]:
        """JSON form (control API)."""
        return {"code": self.code, "level": self.level, "message": self.message,
                "hint": self.hint}


@dataclass(frozen=True)
class LinkState:
    """The uplink's view of the platform (in memory; a restart starts afresh)."""

    configured: bool
    failures: int = 0  # attempts in a row that delivered nothing
    failing_since: datetime | None = None
    # Of those: whether any could not reach the platform at all, and how many distinct
    # certificates failed (counted up to 2: one certificate alone is not the platform).
    unreachable: bool = False
    certificates: int = 0
    last_error: str | None = None
    last_delivery_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryStatus:
    """The outbox and the link, assessed."""

    health: OutboxHealth
    link: LinkState
    alerts: tuple[Alert, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON form: the `delivery` member of the control API's GET /status."""
        h, link = self.health, self.link

        def stamp(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "configured": link.configured,
            "pending": h.counts.pending,
            "parked": h.counts.parked,
            "delivered": h.counts.delivered,
            "failing": h.failing,
            "failing_since": stamp(h.failing_since),
            "oldest_pending_at": stamp(h.oldest_pending),
            "link_failures": link.failures,
            "link_failing_since": stamp(link.failing_since),
            "last_error": link.last_error,
            "last_delivery_at": stamp(link.last_delivery_at),
            "parked_certificates": [
                {"certificate_id": i.certificate_id, "sequence": i.sequence,
                 "attempts": i.attempts, "reason": i.last_error}
                for i in h.parked
            ],
            "alerts": [a.as_dict() for a in self.alerts],
        }


def assess(health: OutboxHealth, link: LinkState, *, alert_after_failures: int
           ) -> DeliveryStatus:
    """The alerts that hold for this outbox and link."""
    alerts: list[Alert] = []
    counts = health.counts
    if counts.parked:
        first = health.parked[0] if health.parked else None
        detail = (f"; first: {first.certificate_id} ({first.last_error})"
                  if first is not None else "")
        alerts.append(Alert(
            "certificates_parked", "error",
            f"{counts.parked} certificate(s) parked: not sent until re-queued{detail}",
            "see why with `wipeagent outbox list`; after fixing the cause: "
            "`wipeagent outbox requeue ID` or `--all`"))
    if health.failing:
        since = f" since {health.failing_since:%Y-%m-%d %H:%M}Z" if health.failing_since else ""
        alerts.append(Alert(
            "certificates_failing", "warning",
            f"{health.failing} certificate(s) failed {alert_after_failures} or more times "
            f"in a row{since}; retried on their own back-off, the others go on",
            "`wipeagent outbox list` shows the platform's answers"))
    if (link.configured and link.failures >= alert_after_failures
            and (link.unreachable or link.certificates > 1)):
        since = f" since {link.failing_since:%Y-%m-%d %H:%M}Z" if link.failing_since else ""
        alerts.append(Alert(
            "platform_failing", "warning",
            f"nothing delivered in the last {link.failures} attempts{since}: "
            f"{link.last_error or 'no answer'}",
            "check the network, uplink.url and the platform's status; certificates wait "
            "in the outbox and nothing is lost"))
    if not link.configured and counts.pending:
        alerts.append(Alert(
            "uplink_not_configured", "info",
            f"{counts.pending} certificate(s) wait in the outbox: uplink.url is not set",
            "set [uplink] url in the configuration to deliver them"))
    return DeliveryStatus(health, link, tuple(alerts))


async def outbox_status(store: Store, *, configured: bool = False,
                        alert_after_failures: int = 3) -> DeliveryStatus:
    """The delivery status from the journal alone (an agent without an uplink, metrics)."""
    health = await Outbox(store).health(failing_after=alert_after_failures)
    return assess(health, LinkState(configured=configured),
                  alert_after_failures=alert_after_failures)
