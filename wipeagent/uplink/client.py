"""The uplink: the outbox delivered to the platform's ingest endpoint, exactly once.

One certificate at a time, oldest first, over HTTPS with mutual TLS:

    POST {url}   Content-Type: application/jose+json   Idempotency-Key: <certificate id>
    body = the certificate's exact JWS bytes from the journal

- 201 / 200 with a receipt naming the same id and SHA-256: delivered, receipt journaled.
- 408, 429, 5xx, connection refused / cut, timeouts, TLS failures: transient. The
  certificate gets a new `next_attempt_at` and the whole link backs off (exponential with
  jitter, or exactly the server's Retry-After), so a platform that is down for days sees
  one request per back-off period, not one per certificate.
- any other 4xx: a permanent refusal, parked with its reason for a technician.

Exactly once: the platform stores by certificate id and answers a repeat with 200, so a
reply lost to a cut connection, a killed agent or a full disk (receipt not journaled) only
means the same bytes are sent again and acknowledged without a second copy.

Every wait goes through the Clock in bench seconds (Retry-After seconds included; in
production a bench second is a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp

from wipeagent import __version__
from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.errors import ConfigError, StoreError
from wipeagent.session import SessionEvent
from wipeagent.store import Store
from wipeagent.uplink.outbox import Outbox, OutboxCounts, OutboxItem, clean_text
from wipeagent.uplink.tls import client_context, ensure_dev_client_tls

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/jose+json"
# A receipt or an error document is small; anything larger is not read.
MAX_RESPONSE_BYTES = 64 * 1024

Result = Literal["delivered", "retry", "parked"]


@dataclass(frozen=True)
class UplinkSettings:
    """How the uplink talks to the platform (bench seconds)."""

    url: str
    timeout_s: float = 30.0
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 900.0
    max_retry_after_s: float = 86400.0
    poll_interval_s: float = 30.0


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    result: Result
    reason: str  # metrics label: created, duplicate, http_503, connection, timeout ...
    error: str = ""
    status: int | None = None
    retry_after_s: float | None = None
    receipt: dict[str, Any] | None = None


class UploadRecorder(Protocol):
    """Where upload results are counted (wipeagent.metrics.Metrics)."""

    def upload_result(self, result: str, reason: str) -> None:
        """One delivery attempt ended with `result` ("delivered", "retry", "parked")."""
        ...


@dataclass(frozen=True)
class DeliveryReport:
    """The outbox after a delivery run."""

    delivered: int
    pending: int
    parked: int
    attempts: int
    total: int
    finished: bool  # nothing left pending (parked ones are a technician's business)

    def summary(self, where: str = "the platform") -> str:
        """One line for people: "delivered N/M certificates to ..."."""
        text = f"delivered {self.delivered}/{self.total} certificates to {where}"
        if self.parked:
            text += f"; {self.parked} parked (wipeagent outbox)"
        if self.pending:
            text += f"; {self.pending} still pending"
        return text


def parse_retry_after(value: str | None, *, now: datetime, speed: float,
                      limit: float) -> float | None:
    """Retry-After (RFC 9110 10.2.3) as bench seconds, capped at `limit`; None if absent
    or unreadable. delta-seconds count as bench seconds; an HTTP-date is real time."""
    if value is None:
        return None
    value = value.strip()[:64]
    if value.isdigit():
        return min(float(int(value[:12])), limit)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds() * speed), limit)


def _error_text(status: int, body: bytes) -> str:
    """`HTTP 422: <reason>: <message>` from an error document, bounded and cleaned."""
    detail = ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            parts = [str(doc[k]) for k in ("error", "reason", "message") if k in doc]
            detail = ": ".join(parts)
    except (ValueError, UnicodeDecodeError, RecursionError):
        detail = body[:200].decode("utf-8", "replace")
    return clean_text(f"HTTP {status}" + (f": {detail}" if detail else ""))


class Uplink:
    """Delivers the outbox; run `run()` as a task for the life of the agent."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: UplinkSettings,
        ssl_context: Any,
        *,
        recorder: UploadRecorder | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.url.startswith("https://"):
            raise ConfigError(f"uplink url must be an https:// URL, got {settings.url!r}")
        self.outbox = Outbox(store)
        self.clock = clock
        self.settings = settings
        self.ssl_context = ssl_context
        self.recorder = recorder
        self.attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._failures = 0  # consecutive transient failures of the link
        self._wake = asyncio.Event()
        self._opened = False

    # -- waking ---------------------------------------------------------------------------

    def wake(self) -> None:
        """A new certificate may be waiting: look now (does not cut a back-off short)."""
        self._wake.set()

    def observe(self, event: SessionEvent) -> None:
        """Session observer: a finished session may have issued a certificate."""
        if event.step == "done":
            self.wake()

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await self.clock.wait_for(self._wake.wait(), max(0.0, seconds))
        self._wake.clear()

    # -- back-off -------------------------------------------------------------------------

    def backoff(self, failures: int) -> float:
        """Exponential back-off with equal jitter: in [d/2, d], d = initial * 2^(n-1) capped."""
        s = self.settings
        exponent = min(max(failures - 1, 0), 30)
        ceiling = min(s.backoff_max_s, s.backoff_initial_s * float(2**exponent))
        return float(ceiling / 2 + self._rng.random() * ceiling / 2)

    def _at(self, bench_seconds: float) -> datetime:
        return self.clock.now() + timedelta(seconds=self.clock.real_seconds(bench_seconds))

    # -- one attempt ----------------------------------------------------------------------

    async def post(self, http: aiohttp.ClientSession, item: OutboxItem) -> Attempt:
        """POST one certificate and classify the answer (never raises but CancelledError)."""
        headers = {
            "Content-Type": MEDIA_TYPE,
            "Accept": "application/json",
            "Idempotency-Key": item.certificate_id,
            "User-Agent": f"wipeagent/{__version__}",
        }
        try:
            async with (
                self.clock.timeout(self.settings.timeout_s),
                http.post(self.settings.url, data=item.data, headers=headers,
                          allow_redirects=False) as response,
            ):
                body = await response.content.read(MAX_RESPONSE_BYTES)
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            return Attempt("retry", "timeout", "no answer from the platform in time")
        except aiohttp.ClientSSLError as exc:
            return Attempt("retry", "tls", clean_text(f"TLS: {exc}"))
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt("retry", "connection",
                           clean_text(f"connection: {type(exc).__name__}: {exc}"))
        if status in (200, 201):
            return self._receipt(item, status, body)
        if status in (408, 429) or status >= 500 or status < 200 or 300 <= status < 400:
            after = parse_retry_after(retry_after, now=self.clock.now(),
                                      speed=self.clock.speed,
                                      limit=self.settings.max_retry_after_s)
            return Attempt("retry", f"http_{status}", _error_text(status, body), status, after)
        if 400 <= status < 500:
            return Attempt("parked", f"http_{status}", _error_text(status, body), status)
        return Attempt("retry", f"http_{status}", _error_text(status, body), status)

    def _receipt(self, item: OutboxItem, status: int, body: bytes) -> Attempt:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        if (
            not isinstance(doc, dict)
            or doc.get("certificate_id") != item.certificate_id
            or doc.get("sha256") != item.sha256
        ):
            # A success that does not name what we sent proves nothing: send it again.
            return Attempt("retry", "bad_receipt",
                           f"HTTP {status} without a receipt for this certificate", status)
        receipt = {
            "status": status,
            "certificate_id": item.certificate_id,
            "sha256": item.sha256,
            "received_at": clean_text(str(doc.get("received_at", "")), 64),
            "acknowledged_at": self.clock.now().isoformat(),
        }
        return Attempt("delivered", "created" if status == 201 else "duplicate",
                       status=status, receipt=receipt)

    async def _record(self, item: OutboxItem, attempt: Attempt) -> float:
        """Journal the attempt; returns bench seconds the link should rest first."""
        if self.recorder is not None:
            self.recorder.upload_result(attempt.result, attempt.reason)
        if attempt.result == "delivered":
            assert attempt.receipt is not None
            self._failures = 0
            await self.outbox.mark_delivered(item.certificate_id, attempt.receipt)
            return 0.0
        if attempt.result == "parked":
            self._failures = 0
            log.error("certificate %s refused by the platform: %s", item.certificate_id,
                      attempt.error)
            await self.outbox.mark_parked(item.certificate_id, attempt.error)
            return 0.0
        self._failures += 1
        delay = (attempt.retry_after_s if attempt.retry_after_s is not None
                 else self.backoff(self._failures))
        log.warning("certificate %s not delivered (%s); next try in %.0f s",
                    item.certificate_id, attempt.error, delay)
        await self.outbox.mark_retry(item.certificate_id, attempt.error, self._at(delay))
        return delay

    # -- the loop -------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        # One connection: deliveries are sequential, and the platform sees one client.
        connector = aiohttp.TCPConnector(ssl=self.ssl_context, limit=1)
        return aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None))

    async def run(self, *, until_idle: bool = False) -> None:
        """Deliver forever (or, with `until_idle`, until nothing is pending)."""
        if not self._opened:
            await self.outbox.open()
            self._opened = True
        async with self._session() as http:
            while True:
                try:
                    item, later = await self.outbox.next_due(self.clock.now())
                except StoreError as exc:
                    self._failures += 1
                    log.error("outbox unreadable: %s", exc)
                    await self.clock.sleep(self.backoff(self._failures))
                    continue
                if item is None:
                    if later is None:
                        if until_idle:
                            return
                        await self._idle(self.settings.poll_interval_s)
                    else:
                        wait = (later - self.clock.now()).total_seconds() * self.clock.speed
                        await self._idle(min(wait, self.settings.poll_interval_s))
                    continue
                self.attempts += 1
                try:
                    attempt = await self.post(http, item)
                except Exception as exc:  # a bug in one attempt must not stop deliveries
                    log.exception("delivery attempt of %s failed", item.certificate_id)
                    attempt = Attempt("retry", "error", clean_text(f"{type(exc).__name__}: {exc}"))
                try:
                    rest = await self._record(item, attempt)
                except StoreError as exc:
                    # Disk full or similar: the certificate stays pending in the journal,
                    # so it is sent again later and the platform answers 200 for it.
                    self._failures += 1
                    log.error("cannot journal the delivery of %s: %s", item.certificate_id, exc)
                    rest = self.backoff(self._failures)
                if rest > 0:
                    await self.clock.sleep(rest)

    async def report(self) -> DeliveryReport:
        """The outbox as it stands."""
        counts: OutboxCounts = await self.outbox.counts()
        return DeliveryReport(
            delivered=counts.delivered, pending=counts.pending, parked=counts.parked,
            attempts=self.attempts, total=counts.delivered + counts.depth,
            finished=counts.pending == 0,
        )


async def deliver_all(
    store: Store,
    *,
    url: str,
    ssl_context: Any,
    clock: Clock,
    timeout_s: float = 300.0,
    settings: UplinkSettings | None = None,
    recorder: UploadRecorder | None = None,
) -> DeliveryReport:
    """Deliver every pending certificate, waiting at most `timeout_s` bench seconds.

    For the demo and tests: returns the outbox report (finished=False on timeout).
    """
    uplink = Uplink(store, clock, settings or UplinkSettings(url=url, backoff_initial_s=1,
                                                             backoff_max_s=30),
                    ssl_context, recorder=recorder)
    try:
        await clock.wait_for(uplink.run(until_idle=True), timeout_s)
    except TimeoutError:
        log.warning("delivery did not finish within %.0f s", timeout_s)
    await uplink.outbox.open()
    return await uplink.report()


def settings_from_config(config: AgentConfig) -> UplinkSettings:
    """UplinkSettings from the [uplink] section."""
    u = config.uplink
    return UplinkSettings(
        url=u.url, timeout_s=u.timeout_s, backoff_initial_s=u.backoff_initial_s,
        backoff_max_s=u.backoff_max_s, max_retry_after_s=u.max_retry_after_s,
        poll_interval_s=u.poll_interval_s,
    )


def uplink_from_config(
    config: AgentConfig,
    store: Store,
    clock: Clock,
    *,
    development: bool,
    recorder: UploadRecorder | None = None,
) -> Uplink | None:
    """The agent's Uplink, or None when no uplink.url is configured.

    Without uplink.client_cert/client_key a development agent uses a client certificate
    from its development CA; a production agent refuses to start.
    """
    u = config.uplink
    if not u.url:
        return None
    cert = Path(u.client_cert) if u.client_cert else None
    key = Path(u.client_key) if u.client_key else None
    if cert is None and key is None:
        if not development:
            raise ConfigError(
                "uplink.url is set but uplink.client_cert / uplink.client_key are not",
                hint="issue the bench a TLS client certificate: wipeagent uplink-key, "
                     "then uplink-sign at the CA (docs/ingest-api.md)",
            )
        dev = ensure_dev_client_tls(config.state_path / "dev-pki",
                                    station_id=config.station.id)
        cert, key = dev.cert, dev.key
    context = client_context(ca=Path(u.ca) if u.ca else None, cert=cert, key=key)
    return Uplink(store, clock, settings_from_config(config), context, recorder=recorder)

