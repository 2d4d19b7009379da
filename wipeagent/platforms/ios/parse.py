"""Validating what an iPhone says about itself (lockdown values, IORegistry, MCInstall).

A phone is untrusted input: every value that reaches a DeviceIdentity, a check or a
certificate passes a pattern or a range here first. A required value that fails is
BadDeviceData naming the key; an optional one is dropped.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from wipeagent.errors import BadDeviceData
from wipeagent.identifiers import valid_imei, valid_meid
from wipeagent.models import DeviceIdentity, EncryptionType, IdentifierSource, Platform

PRODUCT_TYPE_RE = re.compile(r"^(?:iPhone|iPad|iPod)[0-9]{1,3},[0-9]{1,3}$")
SERIAL_RE = re.compile(r"^[A-Z0-9]{8,20}$")
VERSION_RE = re.compile(r"^[0-9]{1,3}(?:\.[0-9]{1,3}){0,3}$")
BUILD_RE = re.compile(r"^[0-9A-Za-z]{3,16}$")
IMEI_RE = re.compile(r"^[0-9]{15}$")
MEID_RE = re.compile(r"^[0-9A-Fa-f]{14}$")
MODEL_NUMBER_RE = re.compile(r"^[A-Z0-9]{1,16}$")
REGION_RE = re.compile(r"^[A-Z0-9/]{1,8}$")
HW_MODEL_RE = re.compile(r"^[A-Za-z0-9]{2,16}$")
UDID_RE = re.compile(r"^(?:[0-9A-F]{8}-[0-9A-F]{16}|[0-9a-f]{40})$")
ACTIVATION_RE = re.compile(r"^[A-Za-z]{1,32}$")
# Organisation names from MDM cloud configuration go into check details: printable, short.
ORG_RE = re.compile(r"^[\w .,&'()@/+-]{1,100}$")

MAX_INT = 1 << 63


@cache
def marketing_names() -> dict[str, str]:
    """ProductType -> marketing name, from the data table shipped with the package."""
    text = resources.files(__package__).joinpath("models.toml").read_text(encoding="utf-8")
    table = tomllib.loads(text)
    names: dict[str, str] = {}
    for section in table.values():
        names.update({str(k): str(v) for k, v in section.items()})
    return names


def text(values: dict[str, Any], key: str, pattern: re.Pattern[str], *,
         required: bool = False) -> str:
    """A string value matching `pattern`; "" when absent/invalid and not required."""
    value = values.get(key)
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    if required:
        shown = repr(value)[:60] if value is not None else "missing"
        raise BadDeviceData(f"lockdown value {key} is not valid: {shown}")
    return ""


def integer(value: Any, low: int = 0, high: int = MAX_INT) -> int | None:
    """An int in [low, high] (bools refused), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def key_fingerprint(public_key: Any) -> str | None:
    """SHA-256 of the phone's lockdown identity key (DevicePublicKey PEM)."""
    if not isinstance(public_key, bytes) or not 0 < len(public_key) <= 4096:
        return None
    return hashlib.sha256(public_key).hexdigest()


def identity_from_values(values: dict[str, Any], capacity_bytes: int | None) -> DeviceIdentity:
    """Build the DeviceIdentity from the default lockdown domain (paired session)."""
    udid = text(values, "UniqueDeviceID", UDID_RE, required=True)
    product_type = text(values, "ProductType", PRODUCT_TYPE_RE, required=True)
    serial = text(values, "SerialNumber", SERIAL_RE, required=True)
    version = text(values, "ProductVersion", VERSION_RE, required=True)
    # A value failing its Luhn check digit is not an IMEI: it stays out of the identity.
    imeis = tuple(i for i in (text(values, "InternationalMobileEquipmentIdentity", IMEI_RE),
                              text(values, "InternationalMobileEquipmentIdentity2", IMEI_RE))
                  if i and valid_imei(i))
    meid = text(values, "MobileEquipmentIdentifier", MEID_RE).upper()
    model_number = text(values, "ModelNumber", MODEL_NUMBER_RE)
    region = text(values, "RegionInfo", REGION_RE)
    hw_model = text(values, "HardwareModel", HW_MODEL_RE)
    ecid = integer(values.get("UniqueChipID"))
    chip = integer(values.get("ChipID"), 0, 0xFFFFFFFF)
    hardware_ids = {
        "udid": udid, "serial": serial, "product_type": product_type,
        "hardware_model": hw_model,
        "ecid": str(ecid) if ecid is not None else "",
        "chip_id": str(chip) if chip is not None else "",
        "imei": imeis[0] if imeis else "",
    }
    return DeviceIdentity(
        platform=Platform.IOS,
        manufacturer="Apple",
        model=product_type,
        model_number=f"{model_number}{region}" if model_number else "",
        marketing_name=marketing_names().get(product_type, ""),
        serial=serial,
        imeis=imeis,
        meid=meid if valid_meid(meid) else None,
        imei_source=IdentifierSource.PHONE if imeis else None,
        udid=udid,
        os_name="iOS" if product_type.startswith("iPhone") else "iPadOS",
        os_version=version,
        build_fingerprint=text(values, "BuildVersion", BUILD_RE),
        storage_capacity_bytes=capacity_bytes,
        # Data Protection: every iPhone since iOS 8 encrypts each file with a per-file key
        # wrapped by class keys (file-based encryption in the agent's terms).
        encryption=EncryptionType.FILE_BASED,
        hardware_ids={k: v for k, v in hardware_ids.items() if v},
    )


@dataclass(frozen=True)
class Battery:
    """Battery figures from the IOPMPowerSource IORegistry entry."""

    cycle_count: int | None
    design_mah: int | None
    full_charge_mah: int | None
    level_percent: int | None
    temperature_c: float | None

    @property
    def health_percent(self) -> float | None:
        if not self.design_mah or self.full_charge_mah is None:
            return None
        return round(100.0 * self.full_charge_mah / self.design_mah, 1)


def parse_battery(entry: Any) -> Battery:
    """IORegistry IOPMPowerSource -> Battery (BadDeviceData when it is not a dictionary)."""
    if not isinstance(entry, dict):
        raise BadDeviceData("IORegistry: no battery entry")
    full = integer(entry.get("NominalChargeCapacity"), 1, 100_000)
    if full is None:
        full = integer(entry.get("AppleRawMaxCapacity"), 1, 100_000)
    temp = integer(entry.get("Temperature"), -10_000, 20_000)
    return Battery(
        cycle_count=integer(entry.get("CycleCount"), 0, 100_000),
        design_mah=integer(entry.get("DesignCapacity"), 1, 100_000),
        full_charge_mah=full,
        level_percent=integer(entry.get("CurrentCapacity"), 0, 100),
        temperature_c=temp / 100.0 if temp is not None else None,
    )


@dataclass(frozen=True)
class DiskUsage:
    total_bytes: int | None
    available_bytes: int | None
    disk_bytes: int | None

    @property
    def used_bytes(self) -> int | None:
        if self.total_bytes is None or self.available_bytes is None:
            return None
        return max(0, self.total_bytes - self.available_bytes)


def parse_disk_usage(domain: Any) -> DiskUsage:
    """com.apple.disk_usage -> DiskUsage (fields that fail validation are None)."""
    if not isinstance(domain, dict):
        return DiskUsage(None, None, None)
    return DiskUsage(
        total_bytes=integer(domain.get("TotalDataCapacity"), 0, 1 << 50),
        available_bytes=integer(domain.get("TotalDataAvailable"), 0, 1 << 50),
        disk_bytes=integer(domain.get("TotalDiskCapacity"), 0, 1 << 50),
    )


@dataclass(frozen=True)
class Management:
    """Supervision and MDM enrolment as the phone reports them."""

    supervised: bool | None
    cloud_config: bool  # MCInstall returned an Automated Device Enrolment configuration
    mdm_unremovable: bool
    organisation: str


def parse_management(chaperone: Any, cloud: Any) -> Management:
    """com.apple.mobile.chaperone + MCInstall GetCloudConfiguration -> Management."""
    supervised = boolean(chaperone.get("DeviceIsChaperoned")) if isinstance(
        chaperone, dict) else None
    org = ""
    applied = unremovable = False
    if isinstance(cloud, dict):
        if supervised is None:
            supervised = boolean(cloud.get("IsSupervised"))
        name = cloud.get("OrganizationName")
        org = name if isinstance(name, str) and ORG_RE.fullmatch(name) else (
            "an organisation (name not shown: invalid characters)" if name else "")
        applied = bool(boolean(cloud.get("ConfigurationWasApplied"))) or bool(
            isinstance(cloud.get("ConfigurationURL"), str))
        unremovable = bool(boolean(cloud.get("IsMDMUnremovable")))
    return Management(supervised, applied, unremovable, org)
