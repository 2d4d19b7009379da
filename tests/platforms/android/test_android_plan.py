"""plan_erase: pure decisions from identity + diagnostics + policy."""

from __future__ import annotations

import pytest

from wipeagent.models import (
    CheckStatus,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    NistCategory,
    Platform,
    Refusal,
)
from wipeagent.platforms.android import checks
from wipeagent.platforms.android.erase import METHOD_MANUAL, METHOD_TESTHARNESS, plan_erase
from wipeagent.platforms.android.parse import Accounts, DevicePolicy, parse_getprop
from wipeagent.platforms.android.verify import settings_recreated
from wipeagent.platforms.base import ErasePolicy


def ident(release: str = "14", enc: EncryptionType = EncryptionType.FILE_BASED) -> DeviceIdentity:
    return DeviceIdentity(platform=Platform.ANDROID, manufacturer="Google", model="Pixel 8",
                          serial="ABC123", os_name="Android", os_version=release,
                          encryption=enc)


def diags(*, sdk: int = 34, lock: bool = False, google: int = 0, owner: str | None = None,
          su: str | None = None, unlocked: bool = False) -> list:
    props = parse_getprop(
        b"[ro.boot.flash.locked]: [%s]\n[ro.boot.verifiedbootstate]: [%s]\n"
        % (b"0" if unlocked else b"1", b"orange" if unlocked else b"green"))
    acc = Accounts(("com.google",) * google, google)
    return [
        checks.os_check(props, sdk, "x"),
        checks.lock_screen_check(disabled=not lock),
        checks.accounts_check(acc),
        checks.frp_check(acc),
        checks.device_owner_check(DevicePolicy(owner)),
        checks.root_check(props, su, magisk=False),
        checks.bootloader_check(props),
    ]


def test_clean_android14_gets_testharness_purge() -> None:
    pre, plan = plan_erase(ident(), diags(), ErasePolicy(), reboot_timeout_s=123)
    assert isinstance(plan, ErasePlan)
    assert plan.method_id == METHOD_TESTHARNESS
    assert plan.method == "adb shell cmd testharness enable"
    assert plan.category == NistCategory.PURGE and not plan.manual
    assert plan.technique == "cryptographic erase via factory reset"
    assert plan.return_timeout_s == 123
    assert all(c.kind == "precondition" for c in pre)
    assert not [c for c in pre if c.status in (CheckStatus.FAIL, CheckStatus.ERROR)]


def test_unencrypted_is_clear() -> None:
    _, plan = plan_erase(ident("10", EncryptionType.NONE), diags(sdk=29), ErasePolicy())
    assert isinstance(plan, ErasePlan)
    assert plan.category == NistCategory.CLEAR
    assert plan.technique == "factory reset (no encryption)"


def test_lock_screen_refused_first() -> None:
    pre, plan = plan_erase(ident(), diags(lock=True, google=1), ErasePolicy())
    assert isinstance(plan, Refusal) and plan.code == "lock_screen"
    assert plan.hint == ("remove the screen lock (Settings > Security), then plug the phone "
                         "in again")
    assert next(c for c in pre if c.id == "precondition.lock_screen").status == "fail"


def test_google_account_depends_on_policy() -> None:
    _, plan = plan_erase(ident(), diags(google=1), ErasePolicy())
    assert isinstance(plan, Refusal) and plan.code == "google_account"
    _, plan2 = plan_erase(ident(), diags(google=1), ErasePolicy(refuse_with_accounts=False))
    assert isinstance(plan2, ErasePlan)


def test_rooted_depends_on_policy() -> None:
    d = diags(su="/system/xbin/su", unlocked=True)
    _, plan = plan_erase(ident(), d, ErasePolicy(refuse_rooted=True))
    assert isinstance(plan, Refusal) and plan.code == "rooted"
    _, plan2 = plan_erase(ident(), d, ErasePolicy())
    assert isinstance(plan2, ErasePlan)


def test_device_owner_refused() -> None:
    _, plan = plan_erase(ident(), diags(owner="com.example.mdm"), ErasePolicy())
    assert isinstance(plan, Refusal) and plan.code == "device_owner"


def test_android9_manual_or_refused() -> None:
    _, plan = plan_erase(ident("9"), diags(sdk=28), ErasePolicy(), manual_reset_timeout_s=900)
    assert isinstance(plan, ErasePlan)
    assert plan.method_id == METHOD_MANUAL and plan.manual
    assert plan.category == NistCategory.PURGE and plan.return_timeout_s == 900
    assert any("Reset options > Erase all data" in s for s in plan.instructions)
    assert any("USB debugging" in s for s in plan.instructions)
    _, refused = plan_erase(ident("9"), diags(sdk=28), ErasePolicy(allow_manual_reset=False))
    assert isinstance(refused, Refusal) and refused.code == "no_software_method"


def test_failed_check_refuses() -> None:
    d = [c for c in diags() if c.id != checks.LOCK_SCREEN]
    d.append(checks.error(checks.LOCK_SCREEN, "Lock screen", "locksettings get-disabled",
                          "Unknown command"))
    _, plan = plan_erase(ident(), d, ErasePolicy())
    assert isinstance(plan, Refusal) and plan.code == "check_failed"
    assert "lock_screen" in plan.message


@pytest.mark.parametrize(
    ("release", "expected"), [("9", METHOD_MANUAL), ("10", METHOD_TESTHARNESS)]
)
def test_sdk_from_release_without_os_check(release: str, expected: str) -> None:
    d = [c for c in diags() if c.id != checks.OS]
    _, plan = plan_erase(ident(release), d, ErasePolicy())
    assert isinstance(plan, ErasePlan) and plan.method_id == expected


def test_lock_screen_check_tells_swipe_from_secure() -> None:
    off = checks.lock_screen_check(True)
    swipe = checks.lock_screen_check(False, "Lock credential verified successfully")
    pin = checks.lock_screen_check(False, "Old password '' didn't match")
    assert (off.status, swipe.status, pin.status) == ("pass", "pass", "fail")
    assert pin.evidence["lock_screen"] is True and swipe.evidence["lock_screen"] is False
    assert "locksettings verify" in pin.method
    # No answer at all is not taken as "no lock".
    assert checks.lock_screen_check(False, "").status == "fail"


def test_unknown_encryption_claims_nothing() -> None:
    _, plan = plan_erase(ident(enc=EncryptionType.UNKNOWN), diags(), ErasePolicy())
    assert isinstance(plan, ErasePlan)
    assert plan.category == NistCategory.CLEAR
    assert plan.technique == "factory reset (encryption not confirmed)"


def test_reset_state_check() -> None:
    th = ErasePlan(method_id=METHOD_TESTHARNESS, method="m", technique="t",
                   category=NistCategory.PURGE)
    manual = th.model_copy(update={"method_id": METHOD_MANUAL, "manual": True})
    assert settings_recreated("1", "1", "1", th).status == CheckStatus.PASS
    assert settings_recreated("57", "1", "1", th).status == CheckStatus.FAIL
    assert settings_recreated("1", "0", "1", th).status == CheckStatus.FAIL
    assert settings_recreated("1", "", "1", manual).status == CheckStatus.PASS
    assert settings_recreated("x1", "", "1", manual).status == CheckStatus.FAIL
    # Android < 7 has no boot_count: noted, not taken as proof either way.
    assert settings_recreated(None, "", "1", manual).status == CheckStatus.WARN
