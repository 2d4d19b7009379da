"""Deterministic session records and PKI for the certificate tests and the bad corpus.

Test modules here have unique names (test_certs_*.py) and import this helper directly:
pytest puts tests/certs on sys.path because the folder is not a package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from wipeagent.certs import payload as payload_module
from wipeagent.models import (
    Booking,
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    EraseRecord,
    Handoff,
    HandoffItem,
    HandoffPolicy,
    HandoffResult,
    HandoffStatus,
    IdentifierSource,
    NistCategory,
    Outcome,
    Platform,
    SessionRecord,
    StationInfo,
)

T0 = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)


def station(station_id: str = "bench-01") -> StationInfo:
    return StationInfo(
        station_id=station_id,
        site="Shenzhen Huaqiang <B2>",
        organisation="Acme Refurb & Co",
        tool_name="wipeagent",
        tool_version="0.1.0",
    )


def android_identity(serial: str = "R58M1234ABC") -> DeviceIdentity:
    return DeviceIdentity(
        platform=Platform.ANDROID,
        manufacturer="samsung",
        model="SM-G991B",
        model_number="SM-G991B/DS",
        marketing_name="Galaxy S21 5G",
        serial=serial,
        imeis=("356789012345678", "356789012345679"),
        imei_source=IdentifierSource.PHONE,
        os_name="Android",
        os_version="14",
        security_patch="2024-09-01",
        build_fingerprint="samsung/o1sxeea/o1s:14/UP1A.231005.007/G991BXXSAGXI1:user/release-keys",
        storage_capacity_bytes=128_000_000_000,
        encryption=EncryptionType.FILE_BASED,
        hardware_ids={"imei0": "356789012345678"},
    )


def ios_identity() -> DeviceIdentity:
    return DeviceIdentity(
        platform=Platform.IOS,
        manufacturer="Apple Inc.",
        model="iPhone14,5",
        model_number="MLPF3",
        marketing_name="iPhone 13 «测试» <i>&amp;",
        serial="F2LXK0AAAAAA",
        imeis=("353012345678901",),
        imei_source=IdentifierSource.TECHNICIAN,
        udid="00008110-001A2B3C4D5E801E",
        os_name="iOS",
        os_version="17.5.1",
        storage_capacity_bytes=128_000_000_000,
        encryption=EncryptionType.FILE_BASED,
    )


def check(
    id: str, kind: CheckKind, status: CheckStatus = CheckStatus.PASS, **evidence: str | int
) -> CheckResult:
    return CheckResult(
        id=id,
        title=id.replace("_", " ").replace(".", ": "),
        kind=kind,
        status=status,
        method=f"adb shell probe {id}",
        detail="",
        evidence=dict(evidence),
    )


def restore_handoff(*, failed: bool = False) -> Handoff:
    """A hand-off under policy restore (as the Android driver records one)."""
    usb = HandoffItem(
        id="usb_debugging", title="USB debugging",
        result=HandoffResult.FAILED if failed else HandoffResult.RESTORED, before="1",
        after=None if failed else "0", method="settings put global adb_enabled 0 (last)",
        detail="the phone still answers ADB <b>" if failed else "USB debugging is off")
    return Handoff(
        policy=HandoffPolicy.RESTORE,
        status=HandoffStatus.FAILED if failed else HandoffStatus.COMPLETED,
        started_at=T0 + timedelta(minutes=8), ended_at=T0 + timedelta(minutes=8, seconds=40),
        items=(
            HandoffItem(id="stay_awake", title="Screen stays on while charging",
                        result=HandoffResult.RESTORED, before="15", after="0",
                        method="settings put global stay_on_while_plugged_in 0"),
            HandoffItem(id="test_harness_mode", title="Test Harness Mode flag",
                        result=HandoffResult.NOT_RESTORABLE, before="1", after="1",
                        method="getprop persist.sys.test_harness",
                        detail="stays 1 until the next factory reset"),
            HandoffItem(id="bench_key", title="This bench's USB debugging key",
                        result=HandoffResult.NOT_RESTORABLE, before="authorised",
                        after="authorised", method="-"),
            usb,
        ),
    )


BOOKING = Booking(reference="TI-1042 <b>&amp;", matched_by="imei", identifier="356789012345678",
                  source="platform")


def erased_record(
    *,
    station_id: str = "bench-01",
    identity: DeviceIdentity | None = None,
    outcome: Outcome = Outcome.ERASED,
    verification: tuple[CheckResult, ...] | None = None,
    exceptions: tuple[str, ...] = (),
    session: str = "s-0001",
    handoff: Handoff | None = None,
    booking: Booking | None = BOOKING,
) -> SessionRecord:
    ident = identity or android_identity()
    plan = ErasePlan(
        method_id="android.testharness",
        method="adb shell cmd testharness enable",
        technique="cryptographic erase via factory reset",
        category=NistCategory.PURGE,
    )
    if verification is None:
        verification = (
            check("erase.reset_observed", CheckKind.VERIFICATION, boot_id_changed=True),
            check("erase.canary_files_gone", CheckKind.VALIDATION, files_checked=3),
            check("erase.accounts_empty", CheckKind.VALIDATION),
        )
    return SessionRecord(
        session_id=session,
        slot="usb-1-1.2",
        station=station(station_id),
        operator="tech <script>alert(1)</script> 王",
        destination="resale",
        started_at=T0,
        ended_at=T0 + timedelta(minutes=9),
        identity=ident,
        diagnostics=(
            check("battery.health", CheckKind.DIAGNOSTIC, percent=91),
            check("storage.size", CheckKind.DIAGNOSTIC, CheckStatus.INFO, bytes=128_000_000_000),
            check("lock.google_account", CheckKind.DIAGNOSTIC, accounts=0),
            check("root.su_present", CheckKind.DIAGNOSTIC, CheckStatus.WARN),
        ),
        preconditions=(
            check("precondition.no_lock_screen", CheckKind.PRECONDITION),
            check("lock.mdm_device_owner", CheckKind.PRECONDITION),
        ),
        erase=EraseRecord(
            plan=plan,
            started_at=T0 + timedelta(minutes=2),
            ended_at=T0 + timedelta(minutes=7),
        ),
        verification=verification,
        outcome=outcome,
        category=NistCategory.PURGE,
        exceptions=exceptions,
        handoff=handoff if handoff is not None else restore_handoff(),
        booking=booking,
    )


def not_erased_record() -> SessionRecord:
    return SessionRecord(
        session_id="s-0002",
        slot="usb-1-1.3",
        station=station(),
        operator="tech-7",
        started_at=T0,
        ended_at=T0 + timedelta(minutes=3),
        identity=ios_identity(),
        diagnostics=(
            check("lock.find_my", CheckKind.DIAGNOSTIC, CheckStatus.FAIL, is_associated=True),
        ),
        outcome=Outcome.NOT_ERASED,
        reasons=("Find My is on: Activation Lock would survive the erase",),
    )


@contextmanager
def payload_path(fast: bool) -> Iterator[None]:
    """Verify payloads on the fast path from the first one (fast) or on the strict path
    only, whatever this process verified before (payload.FAST_PATH_AFTER)."""
    saved = payload_module.FAST_PATH_AFTER
    payload_module.FAST_PATH_AFTER = 0 if fast else 1 << 62
    try:
        yield
    finally:
        payload_module.FAST_PATH_AFTER = saved
