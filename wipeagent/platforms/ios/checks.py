"""iOS checks and the erase plan: pure functions from validated values to CheckResults.

Each check names how it was made (`method`) and what it saw (`evidence`) and claims no
more than that. In particular a Find My state read over lockdown (com.apple.fmip
IsAssociated) is not proof that Activation Lock is off: it has been seen to read false on
phones that were still locked, so it is never a PASS.

What validates data removal on an iPhone (IEEE 2883 "validation"), honestly:
- The user data volume is encrypted with keys wrapped by a key in Effaceable Storage;
  Erase All Content and Settings destroys that key (Apple Platform Security guide). That
  is a cryptographic erase (NIST SP 800-88 Purge), but it is not observable over lockdown.
- Lockdown offers no writable user area without AFC / installed apps, so no canary files
  are planted. The one thing this bench leaves on the phone is its pairing (HostID and
  certificates, stored on the data volume). After the erase the phone must reject that
  pairing: evidence that the data volume's records were wiped, obtained by this bench and
  not by trusting the phone's own report of the reset.
- Verification (the technique ran): the phone came back with a new lockdown identity key
  (regenerated on the new data volume) and unactivated, in Setup.
"""

from __future__ import annotations

from wipeagent.models import (
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    ErasePlan,
    Evidence,
    NistCategory,
    Refusal,
)
from wipeagent.platforms.base import ErasePolicy
from wipeagent.platforms.ios.parse import Battery, DiskUsage, Management

OS = "ios.os"
BATTERY = "ios.battery"
STORAGE = "ios.storage"
FIND_MY = "ios.find_my"
ACTIVATION = "ios.activation_state"
PASSCODE = "ios.passcode"
SUPERVISION = "ios.supervision"
MDM = "ios.mdm_enrollment"

METHOD_BACKUP2 = "ios.mobilebackup2_erase"
METHOD_MCINSTALL = "ios.mcinstall_erase"

FIND_MY_HINT = ("turn off Find My in Settings > [name] > Find My, enter the Apple ID "
                "password, then plug the phone in again")
FIND_MY_CAVEAT = ("read over lockdown (com.apple.fmip IsAssociated); this is not proof "
                  "that Activation Lock is off")
# Apple's own threshold for "Service" in Settings > Battery > Battery Health.
BATTERY_SERVICE_PERCENT = 80.0

D = CheckKind.DIAGNOSTIC
P = CheckKind.PRECONDITION
V = CheckKind.VALIDATION
R = CheckKind.VERIFICATION


def make(  # noqa: PLR0917 - a record constructor, read like one
    id: str, title: str, status: CheckStatus, method: str, detail: str = "",
    evidence: Evidence | None = None, kind: CheckKind = D,
) -> CheckResult:
    """A CheckResult with method and detail trimmed to the model's bounds."""
    return CheckResult(id=id, title=title, kind=kind, status=status, method=method[:500],
                       detail=detail[:1000], evidence=evidence or {})


def error(id: str, title: str, method: str, reason: str, kind: CheckKind = D) -> CheckResult:
    """The check could not be carried out."""
    return make(id, title, CheckStatus.ERROR, method, f"check not carried out: {reason}",
                kind=kind)


# --- diagnostics ---------------------------------------------------------------------------


def os_check(identity: DeviceIdentity) -> CheckResult:
    return make(OS, "iOS version", CheckStatus.INFO, "lockdown GetValue ProductVersion",
                f"{identity.os_name} {identity.os_version} ({identity.build_fingerprint})",
                {"version": identity.os_version, "build": identity.build_fingerprint or None})


def battery_check(battery: Battery) -> CheckResult:
    health = battery.health_percent
    parts = []
    if health is not None:
        parts.append(f"{health:.0f}% of design capacity ({battery.full_charge_mah} of "
                     f"{battery.design_mah} mAh)")
    else:
        parts.append("capacity not reported")
    parts.append(f"{battery.cycle_count} cycles" if battery.cycle_count is not None
                 else "cycle count not reported")
    if health is None:
        status = CheckStatus.WARN
    elif health < BATTERY_SERVICE_PERCENT:
        status = CheckStatus.WARN
        parts.append(f"below {BATTERY_SERVICE_PERCENT:.0f}%: service recommended")
    else:
        status = CheckStatus.PASS
    return make(BATTERY, "Battery", status,
                "diagnostics_relay IORegistry EntryClass=IOPMPowerSource "
                "(NominalChargeCapacity / DesignCapacity, CycleCount)",
                ", ".join(parts),
                {"health_percent": health, "cycle_count": battery.cycle_count,
                 "design_capacity_mah": battery.design_mah,
                 "full_charge_capacity_mah": battery.full_charge_mah,
                 "level_percent": battery.level_percent,
                 "temperature_c": battery.temperature_c})


def storage_check(disk: DiskUsage) -> CheckResult:
    used = disk.used_bytes
    detail = (f"{used / 1e9:.1f} GB used of {disk.total_bytes / 1e9:.1f} GB"
              if used is not None and disk.total_bytes else "not reported")
    return make(STORAGE, "Storage (user data volume)", CheckStatus.INFO,
                "lockdown GetValue com.apple.disk_usage", detail,
                {"total_bytes": disk.total_bytes, "available_bytes": disk.available_bytes,
                 "used_bytes": used, "disk_bytes": disk.disk_bytes})


def find_my_check(associated: bool | None) -> CheckResult:
    method = "lockdown GetValue com.apple.fmip IsAssociated"
    if associated is None:
        return error(FIND_MY, "Find My / Activation Lock", method, "not reported by the phone")
    if associated:
        return make(FIND_MY, "Find My / Activation Lock", CheckStatus.FAIL, method,
                    "Find My is on: the phone stays Activation-Locked to its owner's Apple "
                    "ID after an erase", {"is_associated": True})
    return make(FIND_MY, "Find My / Activation Lock", CheckStatus.INFO, method,
                f"Find My reported off, {FIND_MY_CAVEAT}", {"is_associated": False})


def activation_check(state: str) -> CheckResult:
    return make(ACTIVATION, "Activation state", CheckStatus.INFO,
                "lockdown GetValue ActivationState", state or "not reported",
                {"activation_state": state or None})


def passcode_check(protected: bool | None) -> CheckResult:
    detail = {True: "a passcode is set (the erase uses this bench's escrow bag)",
              False: "no passcode", None: "not reported"}[protected]
    return make(PASSCODE, "Passcode", CheckStatus.INFO, "lockdown GetValue PasswordProtected",
                detail, {"passcode_set": protected})


def supervision_check(m: Management) -> CheckResult:
    method = "lockdown GetValue com.apple.mobile.chaperone DeviceIsChaperoned"
    if m.supervised is None:
        return error(SUPERVISION, "Supervision", method, "not reported by the phone")
    if m.supervised:
        return make(SUPERVISION, "Supervision", CheckStatus.WARN, method,
                    "supervised: erased with MCInstall EraseDevice", {"supervised": True})
    return make(SUPERVISION, "Supervision", CheckStatus.PASS, method, "not supervised",
                {"supervised": False})


def mdm_check(m: Management, *, after: bool = False) -> CheckResult:
    """MDM enrolment (ADE): FAIL (a lock) before the erase; after it a WARN, because a
    FAIL in the post-erase list would mean "not erased" and the data is gone."""
    method = "MCInstall GetCloudConfiguration"
    id = "ios.verify.mdm_enrollment" if after else MDM
    if m.cloud_config:
        who = m.organisation or "an organisation"
        detail = (f"enrolled by {who} through Automated Device Enrolment: the phone "
                  "re-enrols in MDM at setup after the erase; the organisation must "
                  "release it in Apple Business Manager")
        status = CheckStatus.WARN if after else CheckStatus.FAIL
        return make(id, "MDM enrolment", status, method, detail,
                    {"cloud_configuration": True, "mdm_unremovable": m.mdm_unremovable})
    return make(id, "MDM enrolment", CheckStatus.PASS, method,
                "no cloud (Automated Device Enrolment) configuration reported",
                {"cloud_configuration": False})


# --- plan ----------------------------------------------------------------------------------


def _by_id(checks: list[CheckResult]) -> dict[str, CheckResult]:
    return {c.id: c for c in checks}


def plan_erase(
    identity: DeviceIdentity,
    diagnostics: list[CheckResult],
    policy: ErasePolicy,
    *,
    return_timeout_s: float,
) -> tuple[list[CheckResult], ErasePlan | Refusal]:
    """Pure: refuse with Find My on (or unknown); MCInstall for supervised phones,
    mobilebackup2 otherwise. Both are a cryptographic erase (Data Protection): Purge."""
    del policy  # no iOS-specific policy knobs yet; accounts are covered by Find My
    checks = _by_id(diagnostics)
    find_my = checks.get(FIND_MY)
    pre: list[CheckResult] = []
    method = "lockdown GetValue com.apple.fmip IsAssociated (diagnostics)"
    if find_my is None or find_my.status in (CheckStatus.ERROR, CheckStatus.SKIPPED):
        pre.append(make("ios.precondition.find_my", "Find My is off", CheckStatus.FAIL,
                        method, "Find My state unknown", kind=P))
        return pre, Refusal(code="find_my_unknown",
                            message="the phone did not report its Find My state",
                            hint=FIND_MY_HINT)
    if find_my.status is CheckStatus.FAIL:
        pre.append(make("ios.precondition.find_my", "Find My is off", CheckStatus.FAIL,
                        method, "Find My is on", {"is_associated": True}, P))
        return pre, Refusal(
            code="find_my",
            message="Find My is on: after an erase the phone would stay Activation-Locked",
            hint=FIND_MY_HINT)
    pre.append(make("ios.precondition.find_my", "Find My is off", CheckStatus.INFO, method,
                    f"Find My reported off, {FIND_MY_CAVEAT}", {"is_associated": False}, P))
    supervision = checks.get(SUPERVISION)
    supervised = bool(supervision and supervision.evidence.get("supervised"))
    if supervised:
        plan = ErasePlan(
            method_id=METHOD_MCINSTALL,
            method="lockdown StartService com.apple.mobile.MCInstall; "
                   "RequestType=EraseDevice (supervised phone)",
            technique="cryptographic erase: Erase All Content and Settings destroys the "
                      "Data Protection key hierarchy",
            category=NistCategory.PURGE,
            return_timeout_s=return_timeout_s,
        )
    else:
        plan = ErasePlan(
            method_id=METHOD_BACKUP2,
            method="lockdown StartService com.apple.mobilebackup2 (with escrow bag); "
                   "DeviceLink MessageName=EraseDevice",
            technique="cryptographic erase: Erase All Content and Settings destroys the "
                      "Data Protection key hierarchy",
            category=NistCategory.PURGE,
            return_timeout_s=return_timeout_s,
        )
    pre.append(make("ios.precondition.erase_method", "Erase method", CheckStatus.INFO,
                    "supervision state (com.apple.mobile.chaperone)",
                    f"{'supervised' if supervised else 'not supervised'}: {plan.method}",
                    {"method_id": plan.method_id}, P))
    del identity
    return pre, plan


# --- after the erase -----------------------------------------------------------------------


def old_pairing_rejected(rejected: bool | None, host_id: str) -> CheckResult:
    """Validation: the pairing this bench left on the phone's data volume is gone."""
    method = "lockdown StartSession with the pre-erase pair record (HostID) of this bench"
    if rejected is None:
        return error("ios.verify.old_pairing", "Bench pairing forgotten", method,
                     "the pre-erase pairing was not tried after the return (its record was "
                     "missing, or the agent restarted in between)", V)
    return make(
        "ios.verify.old_pairing", "Bench pairing forgotten",
        CheckStatus.PASS if rejected else CheckStatus.FAIL, method,
        ("the phone rejected the pairing made before the erase: its pairing store on the "
         "data volume was wiped; no files were planted (lockdown offers no writable user "
         "area without AFC), so this pairing is the marker") if rejected else
        "the phone still accepts the pre-erase pairing: its data volume was not wiped",
        {"old_pairing_rejected": rejected, "host_id": host_id}, V)


def identity_key_changed(before: str | None, after: str | None) -> CheckResult:
    """Verification: lockdownd generated a new identity key (kept on the data volume)."""
    if before is None or after is None:
        return error("ios.verify.identity_key", "New lockdown identity key",
                     "lockdown GetValue DevicePublicKey (SHA-256, before and after)",
                     "key fingerprint missing", R)
    changed = before != after
    return make(
        "ios.verify.identity_key", "New lockdown identity key",
        CheckStatus.PASS if changed else CheckStatus.FAIL,
        "lockdown GetValue DevicePublicKey (SHA-256, before and after)",
        "the phone came back with a new identity key" if changed else
        "the identity key is unchanged: the phone was not erased",
        {"before_sha256": before, "after_sha256": after}, R)


def unactivated(state: str, setup_done: bool | None) -> CheckResult:
    """Verification: an erased iPhone returns to Setup, unactivated."""
    ok = state == "Unactivated"
    return make(
        "ios.verify.unactivated", "Back in Setup, unactivated",
        CheckStatus.PASS if ok else CheckStatus.FAIL,
        "lockdown GetValue ActivationState; com.apple.PurpleBuddy SetupDone",
        f"ActivationState {state or 'not reported'}, setup "
        f"{'done' if setup_done else 'not done' if setup_done is False else 'unknown'}",
        {"activation_state": state or None, "setup_done": setup_done}, R)


def cryptographic_erase(plan: ErasePlan) -> CheckResult:
    """Information: why the category is Purge, and what cannot be observed."""
    return make(
        "ios.verify.data_protection", "Cryptographic erase (Data Protection)",
        CheckStatus.INFO, f"{plan.method}; Apple Platform Security guide",
        "iPhone user data is always encrypted (Data Protection); Erase All Content and "
        "Settings destroys the key in Effaceable Storage, so the old ciphertext cannot be "
        "decrypted (NIST SP 800-88 Purge). The key destruction itself is not observable over "
        "lockdown; it is inferred from the completed erase checked above",
        {"encryption": "data_protection"}, R)


# A reset must free at least this share of the space used before it, and this much.
MIN_FREED_SHARE = 0.5
MIN_FREED_BYTES = 1_000_000_000


def storage_after(before: int | None, after: DiskUsage, *,
                  activated_before: bool) -> CheckResult:
    """Validation: the used space on the data volume dropped across the erase. A phone
    that only looks new (unactivated, new identity key, old pairing refused) but still
    holds its data shows it here: space, not content, but a quantity the phone cannot
    shrink without freeing it. A phone that was not in use before (unactivated) may
    have nothing to free: then this check says so and does not count."""
    used = after.used_bytes
    method = "lockdown GetValue com.apple.disk_usage TotalDataCapacity - TotalDataAvailable " \
             "(before and after)"
    evidence: Evidence = {"used_bytes_before": before, "used_bytes_after": used,
                          "activated_before": activated_before}
    if before is None or used is None:
        return make("ios.verify.storage", "Used space freed", CheckStatus.ERROR, method,
                    "check not carried out: used space not reported "
                    f"{'before' if before is None else 'after'} the erase", evidence, V)
    freed = before - used
    detail = f"used space {before / 1e9:.1f} GB before, {used / 1e9:.1f} GB after"
    if freed >= MIN_FREED_BYTES and freed >= MIN_FREED_SHARE * before:
        return make("ios.verify.storage", "Used space freed", CheckStatus.PASS, method,
                    f"{detail}: {freed / 1e9:.1f} GB freed", evidence, V)
    if not activated_before:
        return make("ios.verify.storage", "Used space freed", CheckStatus.INFO, method,
                    f"{detail}; the phone was not activated before the erase, so there was "
                    "no user data to free (informational)", evidence, V)
    return make("ios.verify.storage", "Used space freed", CheckStatus.FAIL, method,
                f"{detail}: the data volume is as full as before the erase, so the user "
                "data was not removed", evidence, V)


def left_the_bus(before: int | None, after: int | None, *,
                 host_restarted: bool = False) -> CheckResult:
    """Verification: the phone restarted, as seen from this host. usbmuxd gives every USB
    attachment a new DeviceID; a phone that never detached (a reset faked without a
    restart) keeps the one it had before the erase. Necessary, not sufficient (a re-plug
    also changes it), and not the phone's own word."""
    method = "usbmuxd ListDevices DeviceID (before and after)"
    evidence: Evidence = {"device_id_before": before, "device_id_after": after}
    if before is None or after is None:
        return make("ios.verify.restarted", "Restarted (left the bus)", CheckStatus.ERROR,
                    method, "check not carried out: usbmuxd DeviceID unknown "
                    f"{'before' if before is None else 'after'} the erase", evidence, R)
    if host_restarted:
        return make("ios.verify.restarted", "Restarted (left the bus)", CheckStatus.INFO,
                    method, "the bench PC restarted since the erase began: usbmuxd DeviceIDs "
                    "from before it cannot be compared (informational)", evidence, R)
    if before == after:
        return make("ios.verify.restarted", "Restarted (left the bus)", CheckStatus.FAIL,
                    method, f"the phone never left the USB bus (usbmuxd DeviceID {before} "
                    "before and after): it did not restart, so no erase took place",
                    evidence, R)
    return make("ios.verify.restarted", "Restarted (left the bus)", CheckStatus.PASS, method,
                f"the phone left the bus and came back (usbmuxd DeviceID {before} -> "
                f"{after})", evidence, R)


def find_my_after(associated: bool | None) -> CheckResult:
    method = "lockdown GetValue com.apple.fmip IsAssociated (after the erase)"
    if associated:
        return make("ios.verify.find_my", "Find My after the erase", CheckStatus.WARN, method,
                    "the phone is still associated with an Apple ID: Activation Lock",
                    {"is_associated": True})
    if associated is None:
        return make("ios.verify.find_my", "Find My after the erase", CheckStatus.WARN,
                    method, "not reported: Activation Lock state unknown",
                    {"is_associated": None})
    return make("ios.verify.find_my", "Find My after the erase", CheckStatus.INFO, method,
                f"not associated, {FIND_MY_CAVEAT}", {"is_associated": False})
