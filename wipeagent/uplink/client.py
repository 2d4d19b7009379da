"""The uplink: the outbox delivered to the platform's ingest endpoint, exactly once.

Certificates go oldest-due first over one HTTPS connection with mutual TLS:

    POST {url}   Content-Type: application/jose+json   Idempotency-Key: <certificate id>
    body = the certificate's exact JWS bytes from the journal

- 201 / 200 with a receipt naming the same id and SHA-256: delivered, receipt journaled.
- 408, 429, 5xx, timeouts, a connection cut mid-request, a success without a matching
  receipt: a failure of *this certificate*. It gets its own back-off (exponential with
  jitter, or the server's Retry-After) and the others go on. After
  `park_after_failures` of these in a row it is parked, but only if the platform
  accepted some other certificate since it began to fail: a platform outage never parks
  anything (see docs/ingest-api.md).
- could not connect (refused, unreachable, TLS handshake): a failure of the link. The
  link backs off as a whole (one request per back-off period however long the backlog),
  and the certificate's own count is left alone.
- any other 4xx: a permanent refusal, parked at once with its reason.

Exactly once: the platform stores by certificate id and answers a repeat with 200, so a
reply lost to a cut connection, a killed agent or a full disk (receipt not journaled) only
means the same bytes are sent again and acknowledged without a second copy. That is also
why the receipts of a pick are journaled together, in one transaction: a receipt lost
with the process costs one repeat.

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
from wipeagent.steps import SessionStep
from wipeagent.store import Store
from wipeagent.uplink.alerts import DeliveryStatus, LinkState, assess
from wipeagent.uplink.outbox import Outbox, OutboxCounts, OutboxItem, Receipt, clean_text
from wipeagent.uplink.tls import client_context, ensure_dev_client_tls

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/jose+json"
# A receipt or an error document is small; anything larger is not read.
MAX_RESPONSE_BYTES = 64 * 1024

Result = Literal["delivered", "retry", "parked"]
# Whose failure a retry is: the certificate's own, or the link's (platform not reached).
Scope = Literal["certificate", "link"]

# Certificates read from the journal per pick (with their bytes): one index range read
# serves this many deliveries.
BATCH = 64
# Receipts journaled per transaction (one fsync): a pick's worth, journaled before the next
# pick, so the drain of a backlog adds one short write per BATCH certificates to the
# journal's thread, where the sessions' steps are written. A receipt lost with the
# process costs one repeat, answered 200 by the platform.
RECEIPTS_PER_WRITE = BATCH


@dataclass(frozen=True)
class UplinkSettings:
    """How the uplink talks to the platform (bench seconds)."""

    url: str
    timeout_s: float = 30.0
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 900.0
    max_retry_after_s: float = 86400.0
    poll_interval_s: float = 30.0
    # A certificate is parked after this many of its own failures in a row, once the
    # platform has accepted another certificate since it began to fail.
    park_after_failures: int = 8
    # Alerts (status, metrics, log) from this many failures in a row.
    alert_after_failures: int = 3


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    result: Result
    reason: str  # metrics label: created, duplicate, http_503, connection, timeout ...
    error: str = ""
    status: int | None = None
    retry_after_s: float | None = None
    receipt: dict[str, Any] | None = None
    scope: Scope = "certificate"


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
        self._failures = 0  # consecutive attempts of the link that delivered nothing
        self._failing_since: datetime | None = None
        self._unreachable = False  # one of those could not reach the platform
        self._failed: set[str] = set()  # which certificates failed (up to 2 kept)
        self._alerted = False  # the platform alert was logged for this run of failures
        self._last_error: str | None = None
        self._last_delivery: datetime | None = None  # wall clock of the last receipt
        self._journal_failures = 0  # receipts that could not be journaled, in a row
        self._wake = asyncio.Event()
        # Receipts waiting to be journaled, and the one journal write in flight.
        self._receipts: list[Receipt] = []
        self._writing: asyncio.Task[None] | None = None

    # -- waking ---------------------------------------------------------------------------

    def wake(self) -> None:
        """A new certificate may be waiting: look now (does not cut a back-off short)."""
        self._wake.set()

    def observe(self, event: SessionEvent) -> None:
        """Session observer: a finished session may have issued a certificate."""
        if event.step == SessionStep.DONE:
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
            # A handshake the platform (or something in its place) refused: not this
            # certificate's doing.
            return Attempt("retry", "tls", clean_text(f"TLS: {exc}"), scope="link")
        except aiohttp.ClientConnectorError as exc:
            return Attempt("retry", "connection",
                           clean_text(f"connection: {type(exc).__name__}: {exc}"),
                           scope="link")
        except (aiohttp.ClientError, OSError) as exc:
            # Connected, then cut or garbled mid-request: it may be this certificate.
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

    def _link_answered(self) -> None:
        self._failures = 0
        self._failing_since = None
        self._unreachable = False
        self._failed.clear()
        self._alerted = False

    def _link_failed(self, item: OutboxItem, attempt: Attempt) -> None:
        self._failures += 1
        self._last_error = attempt.error
        if self._failing_since is None:
            self._failing_since = self.clock.now()
        self._unreachable |= attempt.scope == "link"
        if len(self._failed) < 2:
            self._failed.add(item.certificate_id)
        if self._failures >= self.settings.alert_after_failures and (
                self._unreachable or len(self._failed) > 1) and not self._alerted:
            self._alerted = True
            log.error("uplink: nothing delivered in %d attempts in a row: %s (certificates "
                      "wait in the outbox; see `wipeagent status`)", self._failures,
                      attempt.error)

    def _should_park(self, item: OutboxItem, failures: int) -> bool:
        """Its own failures reached the limit, and the platform took another certificate
        since this one began to fail: the platform works, this certificate does not."""
        started = item.failing_since or self.clock.now()
        return (failures >= self.settings.park_after_failures
                and self._last_delivery is not None and self._last_delivery > started)

    async def _record(self, item: OutboxItem, attempt: Attempt) -> float:
        """Journal the attempt; returns bench seconds the link should rest first."""
        if self.recorder is not None:
            self.recorder.upload_result(attempt.result, attempt.reason)
        if attempt.result == "delivered":
            assert attempt.receipt is not None
            self._link_answered()
            self._last_delivery = self.clock.now()
            self._receipts.append(Receipt(item.certificate_id, attempt.receipt))
            self._start_write(at_least=RECEIPTS_PER_WRITE)
            return 0.0
        if attempt.result == "parked":
            self._link_answered()
            log.error("certificate %s refused by the platform: %s; parked (wipeagent outbox "
                      "requeue once the cause is fixed)", item.certificate_id, attempt.error)
            await self.outbox.mark_parked(item.certificate_id, attempt.error)
            return 0.0
        self._link_failed(item, attempt)
        if attempt.scope == "link":
            # The platform was not reached: the link rests, the certificate stays first.
            delay = self.backoff(self._failures)
            log.warning("platform not reached (%s); next try in %.0f s", attempt.error, delay)
            await self.outbox.mark_retry(item.certificate_id, attempt.error, self._at(delay),
                                         own_failure=False)
            return delay
        failures = item.failures + 1
        if self._should_park(item, failures):
            reason = clean_text(f"gave up after {failures} failed attempts in a row while "
                                f"other certificates were delivered; last: {attempt.error}")
            log.error("certificate %s parked: %s (wipeagent outbox requeue)",
                      item.certificate_id, reason)
            if self.recorder is not None:
                self.recorder.upload_result("parked", "gave_up")
            await self.outbox.mark_parked(item.certificate_id, reason, own_failure=True)
        else:
            own = (attempt.retry_after_s if attempt.retry_after_s is not None
                   else self.backoff(failures))
            if failures == self.settings.alert_after_failures:
                log.error("certificate %s failed %d times in a row (%s); retried on its own "
                          "back-off, parked after %d while others are delivered",
                          item.certificate_id, failures, attempt.error,
                          self.settings.park_after_failures)
            else:
                log.warning("certificate %s not delivered (%s); its next try in %.0f s",
                            item.certificate_id, attempt.error, own)
            await self.outbox.mark_retry(item.certificate_id, attempt.error, self._at(own))
        # The link rests briefly after a failure, longer as failures follow each other, and
        # as long as the platform asks when it limits the rate (429) or keeps failing.
        rest = self.backoff(self._failures)
        if attempt.retry_after_s is not None and (attempt.status == 429 or self._failures > 1):
            rest = max(rest, attempt.retry_after_s)
        return rest

    # -- receipts: journaled in the background, several per transaction ------------------

    def _start_write(self, *, at_least: int = 1) -> None:
        if len(self._receipts) >= at_least and (self._writing is None or self._writing.done()):
            batch, self._receipts = self._receipts, []
            self._writing = asyncio.get_running_loop().create_task(
                self._write_receipts(batch), name="uplink-receipts")

    async def _write_receipts(self, batch: list[Receipt]) -> None:
        try:
            await self.outbox.mark_delivered_many(batch)
            self._journal_failures = 0
        except StoreError as exc:
            # Disk full or similar: those certificates stay pending in the journal, so they
            # are sent again later and the platform answers 200 for them.
            self._journal_failures += 1
            log.error("cannot journal the delivery of %d certificate(s): %s", len(batch), exc)

    async def _flush(self) -> None:
        """Wait until every receipt received so far is journaled (or failed to be)."""
        while self._writing is not None or self._receipts:
            if self._writing is not None:
                await asyncio.shield(self._writing)
                self._writing = None
            self._start_write()

    # -- the loop -------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        # One connection: deliveries are sequential, and the platform sees one client.
        connector = aiohttp.TCPConnector(ssl=self.ssl_context, limit=1)
        return aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None))

    async def _attempt(self, http: aiohttp.ClientSession, item: OutboxItem) -> float:
        """Deliver one certificate; bench seconds the link should rest afterwards."""
        self.attempts += 1
        try:
            attempt = await self.post(http, item)
        except Exception as exc:  # a bug in one attempt must not stop deliveries
            log.exception("delivery attempt of %s failed", item.certificate_id)
            attempt = Attempt("retry", "error", clean_text(f"{type(exc).__name__}: {exc}"))
        try:
            return await self._record(item, attempt)
        except StoreError as exc:
            # Disk full or similar: the certificate stays pending in the journal, so it
            # is sent again later and the platform answers 200 for it.
            self._journal_failures += 1
            log.error("cannot journal the delivery of %s: %s", item.certificate_id, exc)
            return self.backoff(self._journal_failures)

    async def _pick(self) -> tuple[list[OutboxItem], float | None]:
        """Due certificates, or ([], bench seconds to idle; None: nothing pending)."""
        now = self.clock.now()
        items, later = await self.outbox.next_batch(now, BATCH)
        if items or later is None:
            return items, None
        return [], (later - now).total_seconds() * self.clock.speed

    async def run(self, *, until_idle: bool = False) -> None:
        """Deliver forever (or, with `until_idle`, until nothing is pending)."""
        async with self._session() as http:
            try:
                while True:
                    try:
                        items, wait = await self._pick()
                    except StoreError as exc:
                        self._journal_failures += 1
                        log.error("outbox unreadable: %s", exc)
                        await self.clock.sleep(self.backoff(self._journal_failures))
                        continue
                    if not items:
                        if wait is None and until_idle:
                            return
                        poll = self.settings.poll_interval_s
                        await self._idle(poll if wait is None else min(wait, poll))
                        continue
                    rest = 0.0
                    for item in items:
                        rest = await self._attempt(http, item)
                        if rest > 0:
                            break  # pick again after resting: what is due has changed
                    await self._flush()
                    if self._journal_failures:
                        rest = max(rest, self.backoff(self._journal_failures))
                    if rest > 0:
                        await self.clock.sleep(rest)
            finally:
                with contextlib.suppress(Exception):
                    await self._flush()

    def link_state(self) -> LinkState:
        """The link as this uplink sees it (in memory)."""
        return LinkState(configured=True, failures=self._failures,
                         failing_since=self._failing_since, last_error=self._last_error,
                         last_delivery_at=self._last_delivery,
                         unreachable=self._unreachable, certificates=len(self._failed))

    async def status(self) -> DeliveryStatus:
        """The outbox and the link, with the alerts that hold."""
        alert_after = self.settings.alert_after_failures
        health = await self.outbox.health(failing_after=alert_after)
        return assess(health, self.link_state(), alert_after_failures=alert_after)

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
    return await uplink.report()


def settings_from_config(config: AgentConfig) -> UplinkSettings:
    """UplinkSettings from the [uplink] section."""
    u = config.uplink
    return UplinkSettings(
        url=u.url, timeout_s=u.timeout_s, backoff_initial_s=u.backoff_initial_s,
        backoff_max_s=u.backoff_max_s, max_retry_after_s=u.max_retry_after_s,
        poll_interval_s=u.poll_interval_s, park_after_failures=u.park_after_failures,
        alert_after_failures=u.alert_after_failures,
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

