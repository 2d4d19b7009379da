"""What a reload changes live and what waits for a restart."""

from __future__ import annotations

from wipeagent.config import parse_config
from wipeagent.models import Outcome
from wipeagent.service.reload import plan_reload
from wipeagent.service.status import BenchSummary
from wipeagent.session import SessionEvent

BASE = """
state_dir = "/tmp/x"
[station]
id = "bench-01"
[policy]
erase = "auto"
[android]
endpoints = ["127.0.0.1:5555"]
"""


def test_policy_and_operator_are_live_the_rest_waits() -> None:
    old = parse_config(BASE)
    new = parse_config(BASE.replace('id = "bench-01"', 'id = "bench-02"\noperator = "bo"')
                       .replace('erase = "auto"', 'erase = "confirm"\nrefuse_rooted = true')
                       .replace("5555", "5556"))
    plan = plan_reload(old, new)
    assert plan.live == ("policy.erase", "policy.refuse_rooted", "station.operator")
    assert plan.restart_needed == ("android.endpoints", "station.id")
    assert plan.effective.policy == new.policy
    assert plan.effective.station.operator == "bo"
    # Restart-only settings keep their running values.
    assert plan.effective.station.id == "bench-01"
    assert plan.effective.android.endpoints == ("127.0.0.1:5555",)


def test_unchanged_file_changes_nothing() -> None:
    plan = plan_reload(parse_config(BASE), parse_config(BASE))
    assert plan.live == () and plan.restart_needed == ()


def test_summary_line() -> None:
    summary = BenchSummary(policy="confirm")
    assert summary.line() == "idle; policy confirm"
    summary(SessionEvent("a", "1", "erase", ""))
    summary(SessionEvent("b", "2", "verify", ""))
    summary(SessionEvent("c", "3", "erase", ""))
    summary(SessionEvent("c", "3", "done", "", outcome=Outcome.ERASED))
    summary(SessionEvent("b", "2", "paused", ""))
    assert summary.line() == "1 phone working (erase 1); done: 1 erased; policy confirm"
