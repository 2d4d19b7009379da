"""Metrics: sessions by state, step durations, outcomes, outbox depth, upload failures."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from uplink_fixtures import Bench

from wipeagent.clock import Clock
from wipeagent.metrics import Metrics
from wipeagent.models import Outcome
from wipeagent.session import SessionEvent
from wipeagent.uplink.outbox import Outbox


class FakeTime(Clock):
    """A clock whose bench time the test moves by hand (only monotonic() is read)."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def ev(slot: str, step: str, outcome: Outcome | None = None) -> SessionEvent:
    return SessionEvent(slot, f"session-{slot}", step, step, outcome=outcome)


def test_sessions_by_state_durations_and_outcomes() -> None:
    clock = FakeTime()
    m = Metrics(clock)
    m.observe(ev("a", "connect"))
    m.observe(ev("b", "connect"))
    clock.t = 2
    m.observe(ev("a", "identify"))
    clock.t = 10
    m.observe(ev("a", "erase"))
    m.observe(ev("a", "erase"))  # reported twice: still one session, timed from the first
    s = samples(m.render())
    assert s[("wipeagent_sessions", (("state", "connect"),))] == 1
    assert s[("wipeagent_sessions", (("state", "erase"),))] == 1
    assert s[("wipeagent_sessions", (("state", "identify"),))] == 0
    clock.t = 70
    m.observe(ev("a", "done", Outcome.ERASED))
    m.observe(ev("b", "done", Outcome.NOT_ERASED))
    m.observe(SessionEvent("c", "", "paused", "unplugged"))  # agent-level: not in flight
    s = samples(m.render())
    assert s[("wipeagent_sessions", (("state", "erase"),))] == 0
    assert s[("wipeagent_sessions", (("state", "connect"),))] == 0
    assert s[("wipeagent_session_outcomes_total", (("outcome", "erased"),))] == 1
    assert s[("wipeagent_session_outcomes_total", (("outcome", "not_erased"),))] == 1
    assert s[("wipeagent_step_duration_seconds_sum", (("step", "connect"),))] == 2 + 70
    assert s[("wipeagent_step_duration_seconds_sum", (("step", "identify"),))] == 8
    assert s[("wipeagent_step_duration_seconds_sum", (("step", "erase"),))] == 60
    assert s[("wipeagent_step_duration_seconds_bucket",
              (("le", "60.0"), ("step", "erase")))] == 1
    assert s[("wipeagent_step_duration_seconds_bucket",
              (("le", "30.0"), ("step", "erase")))] == 0


def test_unknown_steps_do_not_grow_labels() -> None:
    m = Metrics(FakeTime())
    for i in range(50):
        m.observe(ev("a", f"weird-{i}"))
    states = {labels for (name, labels) in samples(m.render()) if name == "wipeagent_sessions"}
    assert states == {(("state", "other"),)}


async def test_outbox_depth_and_upload_failures(bench: Bench) -> None:
    a, b, _ = await bench.issue(3)
    m = Metrics(bench.clock, bench.store)
    text = await m.render_current()
    assert samples(text)[("wipeagent_outbox_depth", ())] == 3
    outbox = await Outbox(bench.store).open()
    await outbox.mark_delivered(a.certificate_id, {"status": 201})
    await outbox.mark_parked(b.certificate_id, "HTTP 400")
    m.upload_result("delivered", "created")
    m.upload_result("retry", "connection")
    m.upload_result("retry", "http_503")
    m.upload_result("parked", "http_400")
    s = samples(await m.render_current())
    assert s[("wipeagent_outbox_depth", ())] == 2
    assert s[("wipeagent_outbox_certificates", (("state", "parked"),))] == 1
    assert s[("wipeagent_outbox_certificates", (("state", "delivered"),))] == 1
    assert s[("wipeagent_upload_failures_total", (("reason", "connection"),))] == 1
    assert s[("wipeagent_upload_failures_total", (("reason", "http_400"),))] == 1
    assert ("wipeagent_upload_failures_total", (("reason", "created"),)) not in s
    assert s[("wipeagent_uploads_total", (("reason", "created"), ("result", "delivered")))] == 1


def test_registries_are_private() -> None:
    a, b = Metrics(FakeTime()), Metrics(FakeTime())
    a.observe(ev("x", "connect"))
    assert ("wipeagent_sessions", (("state", "connect"),)) not in samples(b.render())
