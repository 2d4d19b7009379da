"""Agent metrics in the Prometheus text format, for the control API's /metrics.

A private CollectorRegistry (never the process-global one, so two agents in one test
process do not collide). `Metrics.observe` is a session Observer; `Metrics.upload_result`
is the uplink's recorder; `refresh()` reads the outbox from the journal (or takes the
uplink's assessed `DeliveryStatus`, alerts included), and `render()` returns the text.

    wipeagent_sessions{state}                    sessions in flight, by current step
    wipeagent_step_duration_seconds{step}        bench seconds spent in each step (histogram)
    wipeagent_session_outcomes_total{outcome}    finished sessions by outcome
    wipeagent_outbox_certificates{state}         pending / parked / delivered certificates
    wipeagent_outbox_depth                       certificates not yet delivered
    wipeagent_outbox_failing                     pending ones failing N times in a row
    wipeagent_outbox_oldest_pending_age_seconds  age of the oldest pending certificate
    wipeagent_uplink_consecutive_failures        attempts in a row that delivered nothing
    wipeagent_delivery_alert{alert}              1 while a delivery alert holds, else 0
    wipeagent_uploads_total{result,reason}       delivery attempts (delivered/retry/parked)
    wipeagent_upload_failures_total{reason}      attempts that did not deliver
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from wipeagent.clock import Clock
from wipeagent.errors import StoreError
from wipeagent.session import SessionEvent
from wipeagent.steps import SessionStep
from wipeagent.store import Store
from wipeagent.uplink.alerts import ALERT_CODES, DeliveryStatus, outbox_status

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Step labels are the session's own (wipeagent.steps.SessionStep); anything else seen in an
# event is counted as "other" so a label set can never grow unbounded.
KNOWN_STEPS = frozenset(SessionStep)
# Bench-seconds buckets: from a quick shell probe to a long guided manual reset.
_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
_UPLOAD_RESULTS = frozenset({"delivered", "retry", "parked"})


def _label(step: str) -> str:
    return str(step) if step in KNOWN_STEPS else "other"


class Metrics:
    """Counters, gauges and histograms of one agent."""

    def __init__(self, clock: Clock, store: Store | None = None) -> None:
        self.clock = clock
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge("wipeagent_sessions", "Sessions in flight by current step",
                              ["state"], registry=r)
        self.step_duration = Histogram(
            "wipeagent_step_duration_seconds", "Bench seconds spent in each session step",
            ["step"], buckets=_BUCKETS, registry=r)
        self.outcomes = Counter("wipeagent_session_outcomes",
                                "Finished sessions by outcome", ["outcome"], registry=r)
        self.outbox_state = Gauge("wipeagent_outbox_certificates",
                                  "Certificates by delivery state", ["state"], registry=r)
        self.outbox_depth = Gauge("wipeagent_outbox_depth",
                                  "Certificates not yet delivered (pending + parked)",
                                  registry=r)
        self.outbox_failing = Gauge(
            "wipeagent_outbox_failing",
            "Pending certificates whose last attempts all failed (alert threshold)",
            registry=r)
        self.outbox_oldest = Gauge("wipeagent_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest pending certificate (wall clock)",
                                   registry=r)
        self.link_failures = Gauge("wipeagent_uplink_consecutive_failures",
                                   "Delivery attempts in a row that delivered nothing",
                                   registry=r)
        self.alerts = Gauge("wipeagent_delivery_alert",
                            "1 while a delivery alert holds (see docs/ingest-api.md)",
                            ["alert"], registry=r)
        for code in ALERT_CODES:
            self.alerts.labels(alert=code).set(0)
        self.uploads = Counter("wipeagent_uploads", "Certificate delivery attempts",
                               ["result", "reason"], registry=r)
        self.upload_failures = Counter("wipeagent_upload_failures",
                                       "Delivery attempts that did not deliver",
                                       ["reason"], registry=r)
        # slot -> (current step, bench time it started). Keyed by slot, not session id,
        # because a resumed session changes its id mid-run.
        self._current: dict[str, tuple[str, float]] = {}

    # -- sessions -------------------------------------------------------------------------

    def observe(self, event: SessionEvent) -> None:
        """Session Observer: moves the slot's session to `event.step`."""
        now = self.clock.monotonic()
        step = _label(event.step)
        previous = self._current.pop(event.slot, None)
        if previous is not None:
            prev_step, started = previous
            self.sessions.labels(state=prev_step).dec()
            if prev_step != step:
                self.step_duration.labels(step=prev_step).observe(max(0.0, now - started))
            else:
                now = started  # the same step reported twice: keep timing from its start
        if step == SessionStep.DONE:
            if event.outcome is not None:
                self.outcomes.labels(outcome=event.outcome.value).inc()
            return
        if step == SessionStep.PAUSED and not event.session_id:
            return  # the agent paused the slot's session; it is no longer in flight here
        self._current[event.slot] = (step, now)
        self.sessions.labels(state=step).inc()

    # -- uplink ---------------------------------------------------------------------------

    def upload_result(self, result: str, reason: str) -> None:
        """Uplink recorder: one delivery attempt ended."""
        result = result if result in _UPLOAD_RESULTS else "other"
        reason = reason[:40]
        self.uploads.labels(result=result, reason=reason).inc()
        if result != "delivered":
            self.upload_failures.labels(reason=reason).inc()

    async def refresh(self, status: DeliveryStatus | None = None) -> None:
        """Update the outbox gauges from `status` (the uplink's assessment), else from the
        journal; a failure keeps the last values."""
        if status is None:
            if self.store is None:
                return
            try:
                status = await outbox_status(self.store)
            except StoreError as exc:
                log.warning("metrics: outbox unreadable: %s", exc)
                return
        counts = status.health.counts
        self.outbox_state.labels(state="pending").set(counts.pending)
        self.outbox_state.labels(state="parked").set(counts.parked)
        self.outbox_state.labels(state="delivered").set(counts.delivered)
        self.outbox_depth.set(counts.depth)
        self.outbox_failing.set(status.health.failing)
        oldest = status.health.oldest_pending
        self.outbox_oldest.set(
            max(0.0, (self.clock.now() - oldest).total_seconds()) if oldest else 0.0)
        self.link_failures.set(status.link.failures)
        holding = {a.code for a in status.alerts}
        for code in ALERT_CODES:
            self.alerts.labels(alert=code).set(1 if code in holding else 0)

    def render(self) -> str:
        """The Prometheus text exposition of every metric (call `refresh()` first for a
        current outbox depth)."""
        return generate_latest(self.registry).decode("utf-8")

    async def render_current(self) -> str:
        """refresh() then render(): what a /metrics handler wants."""
        await self.refresh()
        return self.render()
