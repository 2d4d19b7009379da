"""Checks made on the phone after the erase: pure builders from parsed output.

Validation checks (IEEE 2883): the user data is gone by the checked means — accounts,
third-party apps, user files, the canaries. Verification checks: the technique ran —
the settings database was recreated, the phone is in Test Harness Mode / fresh setup, the
storage is encrypted (so the reset destroyed the keys). A FAIL of any validation check
must keep the outcome from being "erased"; that decision belongs to the session.
"""

from __future__ import annotations

from wipeagent.models import (
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    Evidence,
)
from wipeagent.platforms.android import commands as cmd
from wipeagent.platforms.android.checks import make
from wipeagent.platforms.android.erase import METHOD_TESTHARNESS
from wipeagent.platforms.android.parse import Accounts

V = CheckKind.VALIDATION
R = CheckKind.VERIFICATION

# A freshly reset phone has booted once or twice (setup may reboot once).
MAX_BOOT_COUNT_AFTER_RESET = 3


def accounts_gone(accounts: Accounts) -> CheckResult:
    """No account of any type is left."""
    status = CheckStatus.PASS if accounts.declared_count == 0 else CheckStatus.FAIL
    return make(
        "android.verify.accounts", "No accounts left", status, cmd.DUMPSYS_ACCOUNT,
        f"{accounts.declared_count} account(s) found", {"accounts": accounts.declared_count},
        V,
    )


def packages_gone(packages: tuple[str, ...]) -> CheckResult:
    """No third-party (user-installed) package is left."""
    status = CheckStatus.PASS if not packages else CheckStatus.FAIL
    detail = "no third-party packages" if not packages else (
        f"{len(packages)} third-party package(s): " + ", ".join(packages[:10])
    )
    return make(
        "android.verify.packages", "No third-party apps left", status, cmd.PM_THIRD_PARTY,
        detail, {"third_party_packages": len(packages)}, V,
    )


def user_storage_empty(top: tuple[str, ...], non_empty: dict[str, int]) -> CheckResult:
    """/sdcard holds only the default directories, and those are empty."""
    extra = sorted(set(top) - cmd.DEFAULT_SDCARD_DIRS)
    problems = [f"unexpected entry {name!r}" for name in extra[:10]]
    problems += [f"{d}/ holds {n} entr{'y' if n == 1 else 'ies'}" for d, n in
                 sorted(non_empty.items())]
    status = CheckStatus.FAIL if problems else CheckStatus.PASS
    method = f"{cmd.LIST_SDCARD}; ls -a /sdcard/<each default directory>/"
    return make(
        "android.verify.user_storage", "User storage empty", status, method,
        "; ".join(problems) if problems
        else "only the default directories, all empty (Android/ not inspected)",
        {"unexpected_entries": len(extra), "non_empty_dirs": len(non_empty)}, V,
    )


def canary_files_gone(present: dict[str, bool]) -> CheckResult:
    """Every canary file planted before the erase is gone."""
    left = [p for p, here in present.items() if here]
    return make(
        "android.verify.canary_files", "Canary files gone",
        CheckStatus.FAIL if left or not present else CheckStatus.PASS,
        "test -e <canary path> for each canary file",
        ("still present: " + ", ".join(left)) if left else
        (f"{len(present)} canary file(s) gone" if present else "no canary files recorded"),
        {"planted": len(present), "remaining": len(left)}, V,
    )


def canary_setting_gone(value: str | None, expected: str) -> CheckResult:
    """The canary global setting is unset (the settings database was recreated)."""
    still = value is not None and value == expected
    status = CheckStatus.PASS if value is None else CheckStatus.FAIL
    detail = "unset" if value is None else (
        "still holds the canary token" if still else "holds an unexpected value"
    )
    return make(
        "android.verify.canary_setting", "Canary setting gone", status,
        cmd.GET_CANARY_SETTING, detail, {"present": value is not None}, V,
    )


def settings_recreated(boot_count: str | None, test_harness: str, setup_complete: str | None,
                       plan: ErasePlan) -> CheckResult:
    """The settings database is new (boot_count small) and the phone is in the state
    the method leaves it in (Test Harness Mode, or a finished fresh setup)."""
    problems: list[str] = []
    notes: list[str] = []
    count: int | None = int(boot_count) if boot_count and boot_count.isdigit() else None
    if boot_count is None:
        # Settings.Global.BOOT_COUNT exists from Android 7 (API 24) on.
        notes.append("boot_count not reported by this phone (the canary setting is checked)")
    elif count is None:
        problems.append(f"boot_count unreadable ({boot_count[:20]!r})")
    elif count > MAX_BOOT_COUNT_AFTER_RESET:
        problems.append(f"boot_count {count} (a fresh settings database starts at 1)")
    if plan.method_id == METHOD_TESTHARNESS and test_harness != "1":
        problems.append(f"persist.sys.test_harness={test_harness!r}, expected 1")
    status = CheckStatus.FAIL if problems else (CheckStatus.WARN if notes else CheckStatus.PASS)
    return make(
        "android.verify.reset_state", "Factory reset took place", status,
        f"{cmd.BOOT_COUNT}; {cmd.TEST_HARNESS_PROP}; {cmd.SETUP_COMPLETE}",
        "; ".join(problems + notes)
        or f"boot_count {count}, test harness {test_harness or '0'}",
        {"boot_count": count, "test_harness": test_harness or None,
         "user_setup_complete": setup_complete}, R,
    )


def encryption_state(identity: DeviceIdentity,
                     after: EncryptionType | None = None) -> CheckResult:
    """File-based or full-disk encryption: the reset destroyed the keys (crypto erase).
    `identity` is the phone as identified before the erase; `after` what it reports now:
    a phone whose encryption changes across the erase cannot be taken at its word."""
    enc = identity.encryption
    method = "getprop ro.crypto.state ro.crypto.type"
    if after is not None and after != enc:
        return make("android.verify.encryption", "Encryption", CheckStatus.FAIL,
                    f"{method} (before and after the erase)",
                    f"the phone reported {enc.value} encryption before the erase and "
                    f"{after.value} after it: encryption does not change in a reset, so "
                    "its reports cannot be trusted",
                    {"encryption": enc.value, "encryption_after": after.value}, R)
    if enc == EncryptionType.FILE_BASED:
        return make("android.verify.encryption", "Encryption", CheckStatus.PASS, method,
                    "file-based encryption: the reset destroyed the user keys "
                    "(cryptographic erase)", {"encryption": enc.value}, R)
    if enc == EncryptionType.FULL_DISK:
        return make("android.verify.encryption", "Encryption", CheckStatus.PASS, method,
                    "full-disk encryption: the reset wiped the key in the crypto footer "
                    "(cryptographic erase)", {"encryption": enc.value}, R)
    if enc == EncryptionType.NONE:
        return make("android.verify.encryption", "Encryption", CheckStatus.PASS, method,
                    "no encryption: the reset clears the data (NIST Clear, not Purge)",
                    {"encryption": enc.value}, R)
    return make("android.verify.encryption", "Encryption", CheckStatus.WARN, method,
                "encryption state unknown: no cryptographic erase can be claimed",
                {"encryption": enc.value}, R)


def trust_state(rooted: bool, unlocked: bool) -> CheckResult:
    """A rooted OS or unlocked bootloader makes the phone's own answers less trustworthy."""
    if rooted or unlocked:
        return make(
            "android.verify.trust", "Trustworthiness of the phone's answers",
            CheckStatus.WARN, f"{cmd.WHICH_SU}; getprop ro.boot.verifiedbootstate",
            "rooted or bootloader unlocked: a modified OS could report a clean state",
            {"rooted": rooted, "bootloader_unlocked": unlocked}, R,
        )
    return make(
        "android.verify.trust", "Trustworthiness of the phone's answers", CheckStatus.PASS,
        f"{cmd.WHICH_SU}; getprop ro.boot.verifiedbootstate",
        "not rooted, bootloader locked", {"rooted": False, "bootloader_unlocked": False}, R,
    )


# Seconds of uptime allowed beyond the time since the marks were taken (the two clocks
# are read a moment apart).
UPTIME_SLACK_S = 30.0


def rebooted(before_id: str | None, before_uptime: float | None, elapsed_s: float | None,
             after_id: str | None, after_uptime: float | None) -> CheckResult:
    """The phone booted again after the bench marked it: a new kernel boot id, and an
    uptime shorter than the time since the marks (a phone that only pretends to reset
    keeps its uptime running, even if it invents a new boot id)."""
    method = f"{cmd.BOOT_ID}; {cmd.UPTIME} (before and after the erase)"
    evidence: Evidence = {"boot_id_changed": None if before_id is None or after_id is None
                          else before_id != after_id,
                          "uptime_s_before": before_uptime, "uptime_s_after": after_uptime,
                          "seconds_since_marks": None if elapsed_s is None
                          else round(elapsed_s, 1)}
    if before_id is None or before_uptime is None or elapsed_s is None:
        return make("android.verify.rebooted", "Rebooted since the marks", CheckStatus.ERROR,
                    method, "check not carried out: boot id and uptime were not recorded "
                    "before the erase", evidence, R)
    if after_id is None or after_uptime is None:
        return make("android.verify.rebooted", "Rebooted since the marks", CheckStatus.ERROR,
                    method, "check not carried out: boot id or uptime not readable now",
                    evidence, R)
    if after_id == before_id:
        return make("android.verify.rebooted", "Rebooted since the marks", CheckStatus.FAIL,
                    method, "the kernel boot id is the same as before the erase: the phone "
                    "did not reboot, so no reset took place", evidence, R)
    if after_uptime > elapsed_s + UPTIME_SLACK_S:
        return make("android.verify.rebooted", "Rebooted since the marks", CheckStatus.FAIL,
                    method, f"up for {after_uptime:.0f} s although the bench marked it only "
                    f"{elapsed_s:.0f} s ago: it did not reboot since (its boot id changed "
                    "without a boot)", evidence, R)
    return make("android.verify.rebooted", "Rebooted since the marks", CheckStatus.PASS,
                method, f"new boot id; up for {after_uptime:.0f} s, marked {elapsed_s:.0f} s "
                "ago", evidence, R)


# A reset must free at least this much of /data when the phone showed signs of use.
MIN_FREED_BYTES = 64 << 20


def storage_freed(used_before: int | None, used_after: int | None, in_use: bool) -> CheckResult:
    """Validation: the used space on /data dropped across the erase. `in_use`: the phone
    held accounts or third-party apps before (so a reset has something to free). Space,
    not content, but a quantity a phone that hides its data instead of wiping it cannot
    shrink."""
    method = f"{cmd.DF_DATA} (before and after the erase)"
    evidence: Evidence = {"used_bytes_before": used_before, "used_bytes_after": used_after,
                          "in_use_before": in_use}
    if used_before is None or used_after is None:
        return make("android.verify.storage", "Used space freed", CheckStatus.ERROR, method,
                    "check not carried out: used space not known "
                    f"{'before' if used_before is None else 'after'} the erase", evidence, V)
    freed = used_before - used_after
    detail = f"{used_before / 1e9:.2f} GB used before, {used_after / 1e9:.2f} GB after"
    if freed >= MIN_FREED_BYTES:
        return make("android.verify.storage", "Used space freed", CheckStatus.PASS, method,
                    f"{detail}: {freed / 1e9:.2f} GB freed", evidence, V)
    if not in_use:
        return make("android.verify.storage", "Used space freed", CheckStatus.INFO, method,
                    f"{detail}; no accounts or apps before the erase, so little to free "
                    "(informational)", evidence, V)
    return make("android.verify.storage", "Used space freed", CheckStatus.FAIL, method,
                f"{detail}: /data is as full as before the erase although the phone held "
                "accounts or apps, so the user data was not removed", evidence, V)
