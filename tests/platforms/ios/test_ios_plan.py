"""iOS checks, values and the erase plan: pure functions, no phone needed."""

from __future__ import annotations

from typing import Any

import pytest

from wipeagent.errors import BadDeviceData
from wipeagent.models import CheckStatus, ErasePlan, NistCategory, Refusal
from wipeagent.outcome import decide
from wipeagent.platforms.base import ErasePolicy
from wipeagent.platforms.ios import checks
from wipeagent.platforms.ios.parse import (
    Management,
    identity_from_values,
    marketing_names,
    parse_battery,
    parse_management,
)

VALUES: dict[str, Any] = {
    "UniqueDeviceID": "00008101-00F51CAC22442BD4",
    "ProductType": "iPhone13,2",
    "SerialNumber": "GJ0P65Z7BYJH",
    "ProductVersion": "17.5.1",
    "BuildVersion": "21F90",
    "InternationalMobileEquipmentIdentity": "355795429540285",
    "ModelNumber": "MGJ93",
    "RegionInfo": "LL/A",
    "HardwareModel": "D53gAP",
    "UniqueChipID": 68983153812712148,
    "ChipID": 0x8101,
    "DeviceName": "Alex's iPhone",
}


def identity() -> Any:
    return identity_from_values(VALUES, 128_000_000_000)


def test_identity_from_values() -> None:
    ident = identity()
    assert (ident.manufacturer, ident.model, ident.marketing_name) == (
        "Apple", "iPhone13,2", "iPhone 12")
    assert ident.model_number == "MGJ93LL/A" and ident.imeis == ("355795429540285",)
    assert ident.encryption.value == "file_based"
    # The owner's device name is personal data: it is not part of the identity.
    assert "Alex" not in ident.model_dump_json()
    assert ident.hardware_ids["ecid"] == str(VALUES["UniqueChipID"])


@pytest.mark.parametrize(("key", "value"), [
    ("SerialNumber", "$(reboot)"), ("SerialNumber", None), ("ProductType", "iPhone13,2;id"),
    ("ProductVersion", "17.5\n"), ("UniqueDeviceID", "../../x"), ("SerialNumber", 12345),
])
def test_bad_required_values_are_refused(key: str, value: Any) -> None:
    with pytest.raises(BadDeviceData, match=key):
        identity_from_values({**VALUES, key: value}, None)


def test_bad_optional_values_are_dropped() -> None:
    ident = identity_from_values({**VALUES, "InternationalMobileEquipmentIdentity": "35x",
                                  "UniqueChipID": True, "BuildVersion": "<b>"}, None)
    assert ident.imeis == () and "ecid" not in ident.hardware_ids
    assert ident.build_fingerprint == ""


def test_marketing_name_table_is_data() -> None:
    names = marketing_names()
    assert names["iPhone7,2"] == "iPhone 6" and names["iPhone14,7"] == "iPhone 14"
    ident = identity_from_values({**VALUES, "ProductType": "iPhone99,9"}, None)
    assert ident.marketing_name == "" and ident.model == "iPhone99,9"


def test_battery_health_from_design_and_nominal_capacity() -> None:
    worn = checks.battery_check(parse_battery(
        {"CycleCount": 1150, "DesignCapacity": 3110, "NominalChargeCapacity": 2208}))
    assert worn.status is CheckStatus.WARN and worn.evidence["health_percent"] == 71.0
    good = checks.battery_check(parse_battery(
        {"CycleCount": 212, "DesignCapacity": 2815, "NominalChargeCapacity": 2581}))
    assert good.status is CheckStatus.PASS and good.evidence["cycle_count"] == 212
    odd = checks.battery_check(parse_battery({"DesignCapacity": "lots", "CycleCount": -1}))
    assert odd.status is CheckStatus.WARN and odd.evidence["cycle_count"] is None
    with pytest.raises(BadDeviceData):
        parse_battery(["not", "a", "dict"])


def test_find_my_off_is_never_a_pass() -> None:
    off = checks.find_my_check(False)
    assert off.status is CheckStatus.INFO and "not proof" in off.detail
    assert checks.find_my_check(True).status is CheckStatus.FAIL
    assert checks.find_my_check(None).status is CheckStatus.ERROR
    assert checks.find_my_after(False).status is CheckStatus.INFO
    assert checks.find_my_after(True).status is CheckStatus.WARN


def test_management_and_organisation_names() -> None:
    m = parse_management({"DeviceIsChaperoned": True},
                         {"OrganizationName": "ACME <script>", "ConfigurationWasApplied": True})
    assert m.supervised and m.cloud_config and "<" not in m.organisation
    assert checks.mdm_check(m).status is CheckStatus.FAIL
    assert checks.mdm_check(m, after=True).status is CheckStatus.WARN
    assert parse_management(None, None) == Management(None, False, False, "")


def diagnostics(find_my: bool | None, supervised: bool) -> list[Any]:
    m = Management(supervised, False, False, "")
    return [checks.find_my_check(find_my), checks.supervision_check(m)]


def plan(find_my: bool | None, supervised: bool = False) -> tuple[list[Any], Any]:
    return checks.plan_erase(identity(), diagnostics(find_my, supervised), ErasePolicy(),
                             return_timeout_s=900)


def test_find_my_on_is_refused_with_the_hint() -> None:
    pre, refusal = plan(True)
    assert isinstance(refusal, Refusal) and refusal.code == "find_my"
    assert "Settings > [name] > Find My" in refusal.hint
    assert pre[0].status is CheckStatus.FAIL
    _, unknown = plan(None)
    assert isinstance(unknown, Refusal) and unknown.code == "find_my_unknown"


def test_method_follows_supervision_and_is_purge() -> None:
    _, backup2 = plan(False, supervised=False)
    _, mcinstall = plan(False, supervised=True)
    assert isinstance(backup2, ErasePlan) and backup2.method_id == checks.METHOD_BACKUP2
    assert isinstance(mcinstall, ErasePlan) and mcinstall.method_id == checks.METHOD_MCINSTALL
    assert backup2.category is mcinstall.category is NistCategory.PURGE
    assert backup2.return_timeout_s == 900


def test_post_erase_checks_decide_the_outcome() -> None:
    _, p = plan(False)
    assert isinstance(p, ErasePlan)
    good = [checks.old_pairing_rejected(True, "H"), checks.identity_key_changed("a", "b"),
            checks.unactivated("Unactivated", False), checks.cryptographic_erase(p)]
    assert decide(p, good).outcome.value == "erased"
    # A reboot is not an erase: the pairing survives, the key stays, still activated.
    rebooted = [checks.old_pairing_rejected(False, "H"), checks.identity_key_changed("a", "a"),
                checks.unactivated("Activated", True)]
    assert all(c.status is CheckStatus.FAIL for c in rebooted)
    assert decide(p, rebooted).outcome.value == "not_erased"
    assert decide(p, [*good, checks.find_my_after(True)]).outcome.value == (
        "erased_with_exceptions")
    missing = [checks.old_pairing_rejected(True, "H"), checks.identity_key_changed(None, "b")]
    assert decide(p, missing).outcome.value == "not_erased"
