"""The rule that a phone is only 'erased' when every validation check passed."""

from wipeagent.models import CheckKind, CheckResult, CheckStatus, ErasePlan, NistCategory, Outcome
from wipeagent.outcome import MANUAL_RESET_EXCEPTION, decide

PLAN = ErasePlan(method_id="android.testharness", method="cmd testharness enable",
                 technique="cryptographic erase via factory reset", category=NistCategory.PURGE)


def check(id_: str, kind: CheckKind, status: CheckStatus, detail: str = "") -> CheckResult:
    return CheckResult(id=id_, title=id_.replace("_", " "), kind=kind, status=status,
                       method="test", detail=detail)


def test_all_pass_is_erased_purge() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS),
                      check("encryption", CheckKind.VERIFICATION, CheckStatus.PASS)])
    assert d.outcome is Outcome.ERASED
    assert d.category is NistCategory.PURGE
    assert d.exceptions == ()


def test_no_validation_is_never_erased() -> None:
    d = decide(PLAN, [check("encryption", CheckKind.VERIFICATION, CheckStatus.PASS)])
    assert d.outcome is Outcome.NOT_ERASED
    assert d.category is None
    assert d.reasons == ("no check on the phone confirmed that the data is gone",)


def test_no_verification_is_never_erased() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS)])
    assert d.outcome is Outcome.NOT_ERASED
    assert d.reasons == ("no check on the phone confirmed that the erase completed",)


def test_only_info_validation_is_not_erased() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.INFO),
                      check("harness", CheckKind.VERIFICATION, CheckStatus.PASS)])
    assert d.outcome is Outcome.NOT_ERASED


def test_failed_validation_is_not_erased_and_named() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.FAIL, "canary found"),
                      check("accounts", CheckKind.VALIDATION, CheckStatus.PASS)])
    assert d.outcome is Outcome.NOT_ERASED
    assert any("canary found" in r for r in d.reasons)


def test_skipped_validation_is_not_erased() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.SKIPPED)])
    assert d.outcome is Outcome.NOT_ERASED


def test_failed_verification_is_not_erased() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS),
                      check("harness", CheckKind.VERIFICATION, CheckStatus.PASS),
                      check("encryption", CheckKind.VERIFICATION, CheckStatus.FAIL, "none")])
    assert d.outcome is Outcome.NOT_ERASED
    assert d.reasons == ("encryption: none",)


def test_verification_error_is_not_erased() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS),
                      check("harness", CheckKind.VERIFICATION, CheckStatus.ERROR, "timeout")])
    assert d.outcome is Outcome.NOT_ERASED


def test_clear_plan_stays_clear() -> None:
    clear = PLAN.model_copy(update={"category": NistCategory.CLEAR})
    d = decide(clear, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS),
                       check("harness", CheckKind.VERIFICATION, CheckStatus.PASS)])
    assert (d.outcome, d.category) == (Outcome.ERASED, NistCategory.CLEAR)


def test_warning_is_an_exception_but_keeps_category() -> None:
    d = decide(PLAN, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS),
                      check("harness", CheckKind.VERIFICATION, CheckStatus.PASS),
                      check("root", CheckKind.VERIFICATION, CheckStatus.WARN, "rooted")])
    assert d.outcome is Outcome.ERASED_WITH_EXCEPTIONS
    assert d.category is NistCategory.PURGE


def test_manual_reset_is_always_an_exception() -> None:
    manual = PLAN.model_copy(update={"manual": True, "method_id": "android.manual_reset"})
    d = decide(manual, [check("canary", CheckKind.VALIDATION, CheckStatus.PASS),
                        check("boot_count", CheckKind.VERIFICATION, CheckStatus.PASS)])
    assert d.outcome is Outcome.ERASED_WITH_EXCEPTIONS
    assert MANUAL_RESET_EXCEPTION in d.exceptions
