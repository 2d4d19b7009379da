"""A one-line bench summary for `systemctl status` (sd_notify STATUS=)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wipeagent.session import SessionEvent
from wipeagent.steps import SessionStep


@dataclass
class BenchSummary:
    """Counts phones by their latest step and finished sessions by outcome; a session
    Observer."""

    policy: str = ""
    steps: dict[str, SessionStep] = field(default_factory=dict)  # slot -> latest step
    outcomes: Counter[str] = field(default_factory=Counter)
    note: str = ""  # e.g. "reload refused: ..." until the next good reload
    development: bool = False  # signing under a development CA (allow_development_pki)

    def __call__(self, event: SessionEvent) -> None:
        if event.step == SessionStep.DONE and event.outcome is not None:
            self.outcomes[event.outcome.value] += 1
            self.steps.pop(event.slot, None)
        elif event.step == SessionStep.PAUSED:
            self.steps.pop(event.slot, None)
        elif event.step != SessionStep.NOTICE:
            self.steps[event.slot] = event.step

    def line(self) -> str:
        """`2 phones working (erase 1, verify 1); done: 3 erased, 1 not_erased; policy
        confirm`."""
        parts: list[str] = []
        if self.steps:
            by_step = Counter(self.steps.values())
            detail = ", ".join(f"{step} {n}" for step, n in sorted(by_step.items()))
            n = len(self.steps)
            parts.append(f"{n} phone{'s' if n != 1 else ''} working ({detail})")
        else:
            parts.append("idle")
        if self.outcomes:
            done = ", ".join(f"{n} {o}" for o, n in sorted(self.outcomes.items()))
            parts.append(f"done: {done}")
        if self.policy:
            parts.append(f"policy {self.policy}")
        if self.development:
            parts.append("DEVELOPMENT PKI")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)
