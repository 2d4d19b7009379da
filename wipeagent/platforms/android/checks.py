"""Diagnostic checks for Android: pure functions from parsed output to CheckResults.

Each check states the exact command(s) it read (`method`) and the figures it saw
(`evidence`), so a certificate reader can tell what was checked, and how, and nothing
more. Account names are personal data and never go into evidence: only counts and types.
"""

from __future__ import annotations

from wipeagent.models import CheckKind, CheckResult, CheckStatus, Evidence
from wipeagent.platforms.android import commands as cmd
from wipeagent.platforms.android.imei import Answer, PhoneIds
from wipeagent.platforms.android.parse import (
    Accounts,
    Battery,
    DevicePolicy,
    DiskUsage,
    Props,
)

# Check ids the plan reads back (plan_erase is pure: it sees only these results).
OS = "android.os"
BATTERY = "android.battery"
STORAGE = "android.storage"
ROOT = "android.root"
BOOTLOADER = "android.bootloader"
ACCOUNTS = "android.accounts"
DEVICE_OWNER = "android.device_owner"
LOCK_SCREEN = "android.lock_screen"
FRP = "android.frp"
PHONE_IDS = "android.identity.imei"

MAGISK_PACKAGE = "com.topjohnwu.magisk"


def make(  # noqa: PLR0917 - a record constructor, read like one
    id: str,
    title: str,
    status: CheckStatus,
    method: str,
    detail: str = "",
    evidence: Evidence | None = None,
    kind: CheckKind = CheckKind.DIAGNOSTIC,
) -> CheckResult:
    """A CheckResult with the detail trimmed to the model's bound."""
    return CheckResult(
        id=id, title=title, kind=kind, status=status, method=method[:500],
        detail=detail[:1000], evidence=evidence or {},
    )


def error(id: str, title: str, method: str, reason: str) -> CheckResult:
    """The check could not be carried out (command missing, output not understood)."""
    return make(id, title, CheckStatus.ERROR, method, f"check not carried out: {reason}")


def os_check(props: Props, sdk: int, release: str) -> CheckResult:
    """The Android version, as the plan needs it (SDK level decides the method)."""
    return make(
        OS, "Android version", CheckStatus.INFO,
        "getprop ro.build.version.release ro.build.version.sdk",
        f"Android {release} (API {sdk})",
        {"sdk": sdk, "release": release,
         "security_patch": props.text("ro.build.version.security_patch") or None},
    )


def phone_ids_check(ids: PhoneIds) -> CheckResult:
    """What the phone said about its IMEI(s) / MEID. The identifiers themselves are in the
    device identity (certificate `device`); this records how they were asked for."""
    read = len(ids.imeis) + (1 if ids.meid else 0)
    no_modem = Answer.NO_SERVICE.value in ids.answers
    if read:
        status = CheckStatus.PASS if not ids.rejected else CheckStatus.WARN
        detail = (f"{len(ids.imeis)} IMEI(s)" + (", a MEID" if ids.meid else "")
                  + " read from the phone")
    elif no_modem:
        status, detail = CheckStatus.INFO, "no telephony service: a device without a modem"
    else:
        # Not the phone's condition: the technician enters the IMEI. A value that failed
        # its check digit is worth a warning (a misread, a blank or a rewritten IMEI).
        status = CheckStatus.WARN if ids.rejected else CheckStatus.INFO
        detail = ("the phone refused to give its IMEI" if ids.refused
                  else "the phone did not give a valid IMEI")
        detail += "; the technician scans or types it"
    if ids.notes:
        detail += " (" + "; ".join(ids.notes[:4]) + ")"
    return make(
        PHONE_IDS, "IMEI / MEID", status, ids.method, detail,
        {"imeis_read": len(ids.imeis), "meid_read": ids.meid is not None,
         "rejected_values": ids.rejected, "answers": ",".join(ids.answers) or None},
    )


def battery_check(battery: Battery) -> CheckResult:
    """dumpsys battery: level, health, temperature, cycle count where exposed."""
    status = CheckStatus.PASS if battery.health == "good" else CheckStatus.WARN
    detail = f"level {battery.level_percent}%, health {battery.health}"
    if battery.temperature_c is not None:
        detail += f", {battery.temperature_c:.1f} °C"
    if battery.cycle_count is not None:
        detail += f", {battery.cycle_count} cycles"
    else:
        detail += ", cycle count not exposed by this phone"
    return make(
        BATTERY, "Battery", status, cmd.DUMPSYS_BATTERY, detail,
        {"level_percent": battery.level_percent, "health": battery.health,
         "temperature_c": battery.temperature_c, "voltage_mv": battery.voltage_mv,
         "status": battery.status, "technology": battery.technology or None,
         "cycle_count": battery.cycle_count},
    )


def storage_check(disk: DiskUsage) -> CheckResult:
    """df /data: the user-data partition's size and use."""
    return make(
        STORAGE, "Storage (/data)", CheckStatus.INFO, cmd.DF_DATA,
        f"{disk.used_bytes / 1e9:.1f} GB used of {disk.total_bytes / 1e9:.1f} GB",
        {"total_bytes": disk.total_bytes, "used_bytes": disk.used_bytes,
         "available_bytes": disk.available_bytes},
    )


def root_check(props: Props, su_path: str | None, magisk: bool) -> CheckResult:
    """Root indicators: su on PATH, the Magisk package, a debuggable or test-keys build."""
    debuggable = props.text("ro.debuggable") == "1"
    tags = props.text("ro.build.tags")
    test_keys = "test-keys" in tags
    rooted = su_path is not None or magisk
    found = [
        what for what, present in (
            (f"su at {su_path}", su_path is not None), ("Magisk installed", magisk),
            ("ro.debuggable=1", debuggable), ("test-keys build", test_keys),
        ) if present
    ]
    status = CheckStatus.WARN if found else CheckStatus.PASS
    detail = "; ".join(found) if found else "no su binary, no Magisk, release build"
    return make(
        ROOT, "Root indicators", status,
        f"{cmd.WHICH_SU}; {cmd.PM_MAGISK}; getprop ro.debuggable ro.build.tags", detail,
        {"rooted": rooted, "su_path": su_path, "magisk": magisk,
         "debuggable": debuggable, "build_tags": tags or None},
    )


def bootloader_check(props: Props) -> CheckResult:
    """Bootloader lock and verified boot state from the boot properties."""
    flash_locked = props.text("ro.boot.flash.locked")
    vbstate = props.text("ro.boot.verifiedbootstate")
    device_state = props.text("ro.boot.vbmeta.device_state")
    unlocked = flash_locked == "0" or device_state == "unlocked" or vbstate in ("orange", "red")
    known = bool(flash_locked or vbstate or device_state)
    if unlocked:
        status, detail = CheckStatus.WARN, "bootloader unlocked / boot state not verified"
    elif known:
        status, detail = CheckStatus.PASS, "bootloader locked, verified boot"
    else:
        status, detail = CheckStatus.INFO, "the phone does not report its bootloader state"
    return make(
        BOOTLOADER, "Bootloader and verified boot", status,
        "getprop ro.boot.flash.locked ro.boot.verifiedbootstate ro.boot.vbmeta.device_state",
        detail,
        {"unlocked": unlocked, "flash_locked": flash_locked or None,
         "verifiedbootstate": vbstate or None, "vbmeta_device_state": device_state or None},
    )


def accounts_check(accounts: Accounts) -> CheckResult:
    """dumpsys account: how many accounts, how many Google ones."""
    status = CheckStatus.WARN if accounts.google else CheckStatus.PASS
    return make(
        ACCOUNTS, "Accounts on the phone", status, cmd.DUMPSYS_ACCOUNT,
        f"{accounts.declared_count} account(s), {accounts.google} of type com.google",
        {"accounts": accounts.declared_count, "google_accounts": accounts.google,
         "types": ",".join(sorted(set(accounts.types))) or None},
    )


def frp_check(accounts: Accounts) -> CheckResult:
    """Factory Reset Protection risk: a Google account present before the reset."""
    if accounts.google:
        return make(
            FRP, "Factory Reset Protection risk", CheckStatus.WARN, cmd.DUMPSYS_ACCOUNT,
            "a Google account is signed in: after a reset the phone asks for it (FRP)",
            {"frp_risk": True},
        )
    return make(
        FRP, "Factory Reset Protection risk", CheckStatus.PASS, cmd.DUMPSYS_ACCOUNT,
        "no Google account signed in", {"frp_risk": False},
    )


def device_owner_check(policy: DevicePolicy) -> CheckResult:
    """dumpsys device_policy: device owner (MDM) and work profiles."""
    managed = policy.device_owner is not None
    status = CheckStatus.WARN if managed or policy.profile_owners else CheckStatus.PASS
    parts = []
    if managed:
        parts.append(f"device owner {policy.device_owner}")
    if policy.profile_owners:
        parts.append("profile owner(s) " + ", ".join(policy.profile_owners))
    return make(
        DEVICE_OWNER, "Device owner / MDM", status, cmd.DUMPSYS_DEVICE_POLICY,
        "; ".join(parts) or "no device owner, no profile owner",
        {"device_owner": policy.device_owner,
         "profile_owners": ",".join(policy.profile_owners) or None},
    )


def lock_screen_check(disabled: bool, verify_answer: str | None = None) -> CheckResult:
    """Is a secure lock screen (PIN, pattern, password) set?

    `locksettings get-disabled` prints true only when the lock screen is off entirely
    (Settings > Screen lock > None). "false" covers both a swipe lock and a secure one
    (LockPatternUtils.isLockScreenDisabled is false whenever the phone is secure), so the
    driver then asks `locksettings verify` with no credential: "Lock credential verified
    successfully" means there is no secure credential (a swipe lock); anything else
    means one is set. (Old Android versions count that failed verify as one failed
    unlock attempt; it is only made when get-disabled says false.)
    """
    method = cmd.LOCK_DISABLED if verify_answer is None else (
        f"{cmd.LOCK_DISABLED}; {cmd.LOCK_VERIFY}")
    if disabled:
        return make(
            LOCK_SCREEN, "Lock screen", CheckStatus.PASS, method,
            "lock screen disabled (no swipe, PIN, pattern or password)",
            {"lock_screen": False, "get_disabled": True},
        )
    answer = (verify_answer or "").strip().splitlines()
    first = answer[0][:120] if answer else ""
    if "verified successfully" in first:
        return make(
            LOCK_SCREEN, "Lock screen", CheckStatus.PASS, method,
            "swipe lock only: no PIN, pattern or password (locksettings verify succeeded "
            "without a credential)",
            {"lock_screen": False, "get_disabled": False, "verify": first},
        )
    return make(
        LOCK_SCREEN, "Lock screen", CheckStatus.FAIL, method,
        "a PIN, pattern or password is set (locksettings verify without a credential "
        f"answered {first!r})",
        {"lock_screen": True, "get_disabled": False, "verify": first or None},
    )
