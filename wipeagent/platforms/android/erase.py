"""Choosing the erase method for an Android phone: a pure function of what was found.

Android 10+ (API 29+): `cmd testharness enable` factory-resets the phone while keeping
the bench's ADB key authorised, so the agent can verify on the phone afterwards. Older
phones have no software method a non-root shell may use; R2v3 then accepts a guided,
recorded manual reset (when the bench's policy allows it).
"""

from __future__ import annotations

import re

from wipeagent.i18n import N_
from wipeagent.models import (
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    NistCategory,
    Refusal,
)
from wipeagent.platforms.android import checks
from wipeagent.platforms.android import commands as cmd
from wipeagent.platforms.base import ErasePolicy

TESTHARNESS_MIN_SDK = 29  # Android 10

METHOD_TESTHARNESS = "android.testharness"
METHOD_MANUAL = "android.manual_reset"

# Marked for the message catalogue: the bench page shows them in the operator's language.
MANUAL_INSTRUCTIONS = (
    N_("On the phone open Settings > System > Reset options > Erase all data (factory reset)"
       " and confirm."),
    N_("Wait for the phone to restart; finish the setup wizard offline (skip Wi-Fi and do not"
       " sign in to any account)."),
    N_("Open Settings > About phone and tap Build number seven times to enable developer"
       " options."),
    N_("Open Settings > System > Developer options and turn on USB debugging."),
    N_("Plug the phone into the same bench port and tap Allow for this bench (tick Always"
       " allow)."),
)


def _find(diagnostics: list[CheckResult], check_id: str) -> CheckResult | None:
    return next((c for c in diagnostics if c.id == check_id), None)


def sdk_level(identity: DeviceIdentity, diagnostics: list[CheckResult]) -> int | None:
    """The API level from the android.os diagnostic, else from the release number."""
    os_check = _find(diagnostics, checks.OS)
    if os_check is not None and isinstance(os_check.evidence.get("sdk"), int):
        sdk = os_check.evidence["sdk"]
        assert isinstance(sdk, int)
        return sdk
    major = re.match(r"^([0-9]{1,2})", identity.os_version)
    if not major:
        return None
    # Release -> API level for the versions the decision depends on.
    return {8: 26, 9: 28, 10: 29, 11: 30, 12: 31, 13: 33, 14: 34, 15: 35}.get(
        int(major.group(1)), 35 if int(major.group(1)) > 15 else 25
    )


def _pre(  # noqa: PLR0917 - mirrors checks.make
    id: str, title: str, status: CheckStatus, method: str, detail: str,
    evidence: dict[str, str | int | float | bool | None] | None = None) -> CheckResult:
    return checks.make(id, title, status, method, detail, evidence, CheckKind.PRECONDITION)


def _from(
    diag: CheckResult | None, id: str, title: str, fail_when: bool | None, detail: str
) -> CheckResult:
    """A precondition restating a diagnostic: FAIL when it blocks, ERROR when unknown."""
    if diag is None or diag.status in (CheckStatus.ERROR, CheckStatus.SKIPPED):
        reason = diag.detail if diag else "the diagnostic was not run"
        return _pre(id, title, CheckStatus.ERROR, diag.method if diag else "-", reason)
    status = CheckStatus.FAIL if fail_when else CheckStatus.PASS
    return _pre(id, title, status, diag.method, detail or diag.detail, dict(diag.evidence))


def plan_erase(
    identity: DeviceIdentity,
    diagnostics: list[CheckResult],
    policy: ErasePolicy,
    *,
    reboot_timeout_s: float = 600.0,
    manual_reset_timeout_s: float = 1800.0,
) -> tuple[list[CheckResult], ErasePlan | Refusal]:
    """The precondition checks, and either the plan or a precise refusal.

    Refusals, first match wins: a check that could not be made ("check_failed"), a lock
    screen ("lock_screen"), a Google account when policy refuses them ("google_account"),
    a device owner / MDM ("device_owner": enterprise reset protection would lock the
    phone), root or an unlocked bootloader when policy refuses them ("rooted"), no
    software method and no manual reset allowed ("no_software_method").
    """
    lock = _find(diagnostics, checks.LOCK_SCREEN)
    accounts = _find(diagnostics, checks.ACCOUNTS)
    owner = _find(diagnostics, checks.DEVICE_OWNER)
    root = _find(diagnostics, checks.ROOT)
    boot = _find(diagnostics, checks.BOOTLOADER)

    has_lock = bool(lock and lock.evidence.get("lock_screen"))
    google = int(accounts.evidence.get("google_accounts") or 0) if accounts else 0
    has_owner = bool(owner and owner.evidence.get("device_owner"))
    rooted = bool(root and root.evidence.get("rooted"))
    unlocked = bool(boot and boot.evidence.get("unlocked"))
    sdk = sdk_level(identity, diagnostics)

    pre: list[CheckResult] = [
        _from(lock, "precondition.lock_screen", "No lock screen", has_lock, ""),
        _from(accounts, "precondition.google_account", "No Google account (FRP)",
              google > 0 and policy.refuse_with_accounts,
              f"{google} Google account(s); policy refuse_with_accounts="
              f"{policy.refuse_with_accounts}"),
        _from(owner, "precondition.device_owner", "No device owner (MDM)", has_owner, ""),
        _from(root, "precondition.rooted", "Not rooted / bootloader locked",
              (rooted or unlocked) and policy.refuse_rooted,
              f"rooted={rooted}, bootloader unlocked={unlocked}; policy refuse_rooted="
              f"{policy.refuse_rooted}"),
    ]
    software = sdk is not None and sdk >= TESTHARNESS_MIN_SDK
    pre.append(_pre(
        "precondition.method", "Software erase method available",
        CheckStatus.PASS if software else CheckStatus.INFO,
        "getprop ro.build.version.sdk",
        f"API {sdk}: " + ("cmd testharness enable (Android 10+)" if software
                          else "no Test Harness Mode before Android 10"),
        {"sdk": sdk, "software_method": software},
    ))

    errored = [c for c in pre if c.status == CheckStatus.ERROR]
    if errored:
        names = ", ".join(c.id.removeprefix("precondition.") for c in errored)
        return pre, Refusal(
            code="check_failed",
            message=f"could not check {names}: {errored[0].detail}"[:500],
            hint="unplug the phone and plug it in again; if it repeats, set it aside",
        )
    if has_lock:
        return pre, Refusal(
            code="lock_screen",
            message="the phone has a lock screen (set Screen lock to None before erasing)",
            hint="remove the screen lock (Settings > Security), then plug the phone in again",
        )
    if google and policy.refuse_with_accounts:
        return pre, Refusal(
            code="google_account",
            message=f"{google} Google account(s) signed in: Factory Reset Protection would "
            "lock the phone after the reset",
            hint="remove the Google account (Settings > Passwords & accounts), then plug "
            "the phone in again",
        )
    if has_owner:
        return pre, Refusal(
            code="device_owner",
            message="the phone is managed by a device owner (MDM); its reset protection "
            "would lock the phone after the reset",
            hint="have the organisation release the phone from its MDM, then plug it in again",
        )
    if (rooted or unlocked) and policy.refuse_rooted:
        return pre, Refusal(
            code="rooted",
            message="the phone is rooted or its bootloader is unlocked; policy refuses such "
            "phones",
            hint="set the phone aside for a reflash; the bench does not erase rooted phones",
        )

    encrypted = identity.encryption in (EncryptionType.FILE_BASED, EncryptionType.FULL_DISK)
    category = NistCategory.PURGE if encrypted else NistCategory.CLEAR
    technique = (
        "cryptographic erase via factory reset" if encrypted
        else "factory reset (no encryption)" if identity.encryption == EncryptionType.NONE
        else "factory reset (encryption not confirmed)"
    )
    if software:
        return pre, ErasePlan(
            method_id=METHOD_TESTHARNESS,
            method=f"adb shell {cmd.TESTHARNESS_ENABLE}",
            technique=technique,
            category=category,
            return_timeout_s=reboot_timeout_s,
        )
    if policy.allow_manual_reset:
        return pre, ErasePlan(
            method_id=METHOD_MANUAL,
            method="guided manual factory reset (Settings > System > Reset options > "
            "Erase all data), recorded by the agent",
            technique=technique,
            category=category,
            manual=True,
            instructions=MANUAL_INSTRUCTIONS,
            return_timeout_s=manual_reset_timeout_s,
        )
    return pre, Refusal(
        code="no_software_method",
        message=f"Android API {sdk} has no software erase method (Test Harness Mode needs "
        "Android 10) and policy does not allow a manual reset",
        hint="erase the phone by hand outside the bench, or allow guided manual resets",
    )
