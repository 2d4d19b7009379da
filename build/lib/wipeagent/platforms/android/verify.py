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


def encryption_state(identity: DeviceIdentity) -> CheckResult:
    """File-based or full-disk encryption: the reset destroyed the keys (crypto erase)."""
    enc = identity.encryption
    method = "getprop ro.crypto.state ro.crypto.type"
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
