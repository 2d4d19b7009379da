"""Turning verification checks into a session outcome: the rule that protects against the
worst failure (a certificate saying "erased" for a phone that still holds data).

Pure functions, no I/O, so every rule is tested on its own. The certificate verifier
(wipeagent.certs.payload.check_consistency) applies this very `decide` to the checks a
payload carries, so a certificate breaking the rule can neither be issued nor verified.
`decide` reads checks and plans through small Protocols (no pydantic needed), which the
session's records and the verifier's views of a payload both satisfy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from wipeagent.enums import CheckKind, CheckStatus, NistCategory, Outcome


class CheckLike(Protocol):
    """What the rule reads of a check (models.CheckResult has it)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> CheckKind: ...
    @property
    def status(self) -> CheckStatus: ...
    @property
    def title(self) -> str: ...
    @property
    def detail(self) -> str: ...


class PlanLike(Protocol):
    """What the rule reads of an erase plan (models.ErasePlan has it)."""

    @property
    def manual(self) -> bool: ...
    @property
    def category(self) -> NistCategory: ...

MANUAL_RESET_EXCEPTION = (
    "manual reset: the technician performed the factory reset under the agent's guidance; "
    "the agent verified the result but did not execute the reset itself"
)

# Reason codes of a NOT_ERASED decision whose checks did not confirm the erase.
VALIDATION_FAILED_CODE = "validation_failed"  # the data is not shown to be gone
VERIFICATION_FAILED_CODE = "verification_failed"  # the technique is not shown to have run

# The check ran, but its answer cannot be counted on.
_IN_DOUBT = (CheckStatus.ERROR, CheckStatus.SKIPPED)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    category: NistCategory | None
    reasons: tuple[str, ...]
    exceptions: tuple[str, ...]
    # Machine-readable reason codes for not_erased ("lock_screen", "device_timeout" ...).
    codes: tuple[str, ...] = ()
    # Machine-readable exception codes ("manual_reset", "check_warning:<check id>").
    exception_codes: tuple[str, ...] = ()


def not_erased(*reasons: str, code: str) -> Decision:
    return Decision(Outcome.NOT_ERASED, None, tuple(reasons), (), (code,))


# Members bound once: the certificate verifier runs this rule on every certificate, and
# reading an enum member through its class is a Python-level descriptor call.
_FAIL, _PASS, _WARN = CheckStatus.FAIL, CheckStatus.PASS, CheckStatus.WARN
_KINDS = ((CheckKind.VALIDATION, "the data is gone", VALIDATION_FAILED_CODE),
          (CheckKind.VERIFICATION, "the erase completed", VERIFICATION_FAILED_CODE))
_NOT_ERASED, _ERASED = Outcome.NOT_ERASED, Outcome.ERASED
_ERASED_WITH_EXCEPTIONS = Outcome.ERASED_WITH_EXCEPTIONS


def _describe(check: CheckLike) -> str:
    return f"{check.title}: {check.detail or str(check.status)}"


def decide(plan: PlanLike, verification: Sequence[CheckLike]) -> Decision:
    """The outcome of a session whose erase ran and whose phone came back.

    - Validation (is the data gone?) and verification (did the technique complete?) must
      each be *confirmed*: at least one check of the kind passed, none failed, none could
      not run (error) or was skipped. Otherwise the phone is NOT erased.
    - A warning on any check, or a manual reset, is an exception: erased_with_exceptions.
    - The category is the one the plan could reach (Purge only for a cryptographic erase).
    """
    reasons: list[str] = []
    codes: list[str] = []
    for kind, what, code in _KINDS:
        checks = [c for c in verification if c.kind is kind]
        bad = [c for c in checks if c.status is _FAIL or c.status in _IN_DOUBT]
        reasons.extend(_describe(c) for c in bad)
        passed = any(c.status is _PASS for c in checks)
        if not passed and not bad:
            reasons.append(f"no check on the phone confirmed that {what}")
        if bad or not passed:
            codes.append(code)
    if reasons:
        return Decision(_NOT_ERASED, None, tuple(reasons), (), tuple(codes))
    warned = [c for c in verification if c.status is _WARN]
    exceptions = [_describe(c) for c in warned]
    exception_codes = [f"check_warning:{c.id}" for c in warned]
    if plan.manual:
        exceptions.append(MANUAL_RESET_EXCEPTION)
        exception_codes.append("manual_reset")
    outcome = _ERASED_WITH_EXCEPTIONS if exceptions else _ERASED
    return Decision(outcome, plan.category, (), tuple(exceptions), (),
                    tuple(exception_codes))


HANDOFF_FAILED_CODE = "handoff_failed"


def with_handoff(decision: Decision, failed: str | None) -> Decision:
    """The outcome once the hand-off ran; `failed` says what failed in it (None: the
    hand-off completed, or there was none). The erase claim (category, verification)
    stays what verification established: a hand-off never upgrades it, and a failed
    hand-off never hides. A failed hand-off of an erased phone makes it
    erased_with_exceptions (the data is gone, but the phone is not in the promised
    state); a not_erased phone gets no hand-off."""
    if failed is None or decision.outcome is Outcome.NOT_ERASED:
        return decision
    exception = f"hand-off failed: {failed}"[:1000]
    return Decision(Outcome.ERASED_WITH_EXCEPTIONS, decision.category, decision.reasons,
                    (*decision.exceptions, exception), (*decision.codes, HANDOFF_FAILED_CODE),
                    (*decision.exception_codes, HANDOFF_FAILED_CODE))
