"""Parsers against captured real-format Android output, and hostile variants."""

from __future__ import annotations

import pytest

from wipeagent.errors import BadDeviceData
from wipeagent.models import EncryptionType
from wipeagent.platforms.android.driver import encryption_type, identity_from_props
from wipeagent.platforms.android.parse import (
    NAME_RE,
    decode_text,
    parse_bool,
    parse_device_policy,
    parse_df,
    parse_dumpsys_account,
    parse_dumpsys_battery,
    parse_getprop,
    parse_ls_names,
    parse_pm_packages,
    parse_setting,
)

# getprop as printed by a Pixel 8 on Android 14 (excerpt, order as on the phone).
GETPROP_PIXEL8 = b"""[aaudio.mmap_policy]: [2]
[dalvik.vm.heapsize]: [576m]
[persist.sys.test_harness]: [0]
[ro.boot.flash.locked]: [1]
[ro.boot.hardware]: [shiba]
[ro.boot.serialno]: [38151FDJH00A8Q]
[ro.boot.vbmeta.device_state]: [locked]
[ro.boot.verifiedbootstate]: [green]
[ro.build.fingerprint]: [google/shiba/shiba:14/AP2A.240805.005/12025142:user/release-keys]
[ro.build.tags]: [release-keys]
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.build.version.security_patch]: [2024-08-05]
[ro.crypto.state]: [encrypted]
[ro.crypto.type]: [file]
[ro.debuggable]: [0]
[ro.hardware]: [shiba]
[ro.product.board]: [shiba]
[ro.product.brand]: [google]
[ro.product.device]: [shiba]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 8]
[ro.product.name]: [shiba]
[ro.serialno]: [38151FDJH00A8Q]
"""

DUMPSYS_BATTERY_A14 = b"""Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3919000
  status: 2
  health: 2
  present: true
  level: 87
  scale: 100
  voltage: 4215
  temperature: 281
  technology: Li-ion
  Charging state: 0
  Charging policy: 1
  Capacity level: 3
"""

DUMPSYS_ACCOUNT_ONE_GOOGLE = b"""User UserInfo{0:Owner:c13}:
  Accounts: 2
    Account {name=someone@gmail.com, type=com.google}
    Account {name=someone, type=com.whatsapp}

  Active Sessions: 0

  RegisteredServicesCache: 5 services
    ServiceInfo: AuthenticatorDescription {type=com.google}, ComponentInfo{...}, uid 10150
"""

DUMPSYS_ACCOUNT_NONE = b"""User UserInfo{0:Owner:c13}:
  Accounts: 0

  Active Sessions: 0
"""

DEVICE_POLICY_DO = b"""Current Device Policy Manager state:
  Immutable state:
    mHasFeature=true
    mIsWatch=false
  Device Owner:
    admin=ComponentInfo{com.example.mdm/com.example.mdm.AdminReceiver}
    name=Example MDM
    package=com.example.mdm
    isOrganizationOwnedDevice=true
    User ID: 0

  Profile Owner (User 10):
    admin=ComponentInfo{com.example.work/.Receiver}
    name=Work
    package=com.example.work
    isOrganizationOwnedDevice=false
"""

DEVICE_POLICY_NONE = b"""Current Device Policy Manager state:
  Immutable state:
    mHasFeature=true
  Enabled Device Admins (User 0, provisioningState: 0):
"""

DF_DATA = b"""Filesystem        1K-blocks    Used Available Use% Mounted on
/dev/block/dm-48 115310256 9633740 105545444   9% /data
"""


def test_getprop_identity_pixel8() -> None:
    props = parse_getprop(GETPROP_PIXEL8)
    ident = identity_from_props(props, 118_000_000_000)
    assert (ident.manufacturer, ident.model, ident.serial) == ("Google", "Pixel 8",
                                                               "38151FDJH00A8Q")
    assert ident.model_number == "Pixel 8"  # the marketed model, not the codename
    assert ident.os_version == "14" and ident.security_patch == "2024-08-05"
    assert ident.encryption == EncryptionType.FILE_BASED
    assert ident.build_fingerprint.startswith("google/shiba/shiba:14/")
    assert ident.hardware_ids["boot_serial"] == "38151FDJH00A8Q"
    assert ident.hardware_ids["hardware"] == "shiba"
    assert ident.storage_capacity_bytes == 118_000_000_000


def test_getprop_ignores_garbage_and_multiline() -> None:
    props = parse_getprop(b"junk line\n[a.b]: [one\ntwo]\n[ro.x]: [1]\n[bad key!]: [x]\n")
    assert props.keys() == ["ro.x"]


def test_getprop_metacharacters_refused_naming_property() -> None:
    out = GETPROP_PIXEL8.replace(b"[Pixel 8]", b"[Pixel $(reboot); rm -rf /]")
    with pytest.raises(BadDeviceData, match=r"ro\.product\.model"):
        identity_from_props(parse_getprop(out))


def test_getprop_invalid_utf8_refused_naming_property() -> None:
    out = GETPROP_PIXEL8.replace(b"[Google]", b"[Goo\xffgle]")
    with pytest.raises(BadDeviceData, match=r"ro\.product\.manufacturer.*UTF-8") as info:
        identity_from_props(parse_getprop(out))
    assert "inspection" in info.value.hint


def test_getprop_control_characters_refused() -> None:
    out = GETPROP_PIXEL8.replace(b"[Pixel 8]", b"[Pixel\x1b[2J 8]")
    with pytest.raises(BadDeviceData, match=r"ro\.product\.model"):
        identity_from_props(parse_getprop(out))


def test_getprop_bad_serial_and_missing_serial() -> None:
    bad = GETPROP_PIXEL8.replace(b"[ro.serialno]: [38151FDJH00A8Q]", b"[ro.serialno]: [a b]")
    with pytest.raises(BadDeviceData, match=r"ro\.serialno"):
        identity_from_props(parse_getprop(bad))
    missing = b"\n".join(line for line in GETPROP_PIXEL8.splitlines() if b"serialno" not in line)
    with pytest.raises(BadDeviceData, match="serial"):
        identity_from_props(parse_getprop(missing))


def test_getprop_huge_value_refused() -> None:
    out = GETPROP_PIXEL8.replace(b"[Pixel 8]", b"[" + b"P" * 5000 + b"]")
    with pytest.raises(BadDeviceData):
        identity_from_props(parse_getprop(out))


def test_name_pattern_accepts_real_model_names() -> None:
    for name in ("Pixel 8", "SM-S911B", "moto g(7) power", "Galaxy S23+", "Nokia 7.2",
                 "Redmi Note 8 Pro", "LG-H870"):
        assert NAME_RE.fullmatch(name), name


@pytest.mark.parametrize(
    ("state", "ctype", "expected"),
    [("encrypted", "file", EncryptionType.FILE_BASED),
     ("encrypted", "block", EncryptionType.FULL_DISK),
     ("encrypted", "", EncryptionType.FULL_DISK),
     ("unencrypted", "", EncryptionType.NONE),
     ("unsupported", "", EncryptionType.NONE),
     ("", "", EncryptionType.UNKNOWN),
     ("encrypted", "weird", EncryptionType.UNKNOWN)],
)
def test_encryption_mapping(state: str, ctype: str, expected: EncryptionType) -> None:
    assert encryption_type(state, ctype) == expected


def test_battery() -> None:
    b = parse_dumpsys_battery(DUMPSYS_BATTERY_A14)
    assert b.level_percent == 87 and b.health == "good" and b.status == "charging"
    assert b.temperature_c == pytest.approx(28.1) and b.voltage_mv == 4215
    assert b.cycle_count is None and b.technology == "Li-ion"


def test_battery_cycle_count_and_bad_values() -> None:
    b = parse_dumpsys_battery(DUMPSYS_BATTERY_A14 + b"  Cycle count: 312\n")
    assert b.cycle_count == 312
    with pytest.raises(BadDeviceData, match="level"):
        parse_dumpsys_battery(DUMPSYS_BATTERY_A14.replace(b"level: 87", b"level: $(id)"))
    with pytest.raises(BadDeviceData):
        parse_dumpsys_battery(b"Can't find service: battery\n")
    with pytest.raises(BadDeviceData, match="UTF-8"):
        parse_dumpsys_battery(DUMPSYS_BATTERY_A14 + b"\xc3\x28")


def test_accounts_counts_types_not_names() -> None:
    acc = parse_dumpsys_account(DUMPSYS_ACCOUNT_ONE_GOOGLE)
    assert acc.google == 1 and acc.declared_count == 2
    assert acc.types == ("com.google", "com.whatsapp")
    assert parse_dumpsys_account(DUMPSYS_ACCOUNT_NONE).declared_count == 0


def test_accounts_inconsistent_or_unknown_format_is_not_zero() -> None:
    with pytest.raises(BadDeviceData, match="declared"):
        parse_dumpsys_account(DUMPSYS_ACCOUNT_ONE_GOOGLE.replace(b"Accounts: 2", b"Accounts: 3"))
    with pytest.raises(BadDeviceData, match="format"):
        parse_dumpsys_account(b"Can't find service: account\n")
    with pytest.raises(BadDeviceData, match="account type"):
        parse_dumpsys_account(DUMPSYS_ACCOUNT_NONE.replace(
            b"Accounts: 0", b"Accounts: 1\n    Account {name=x, type=a;reboot}"))


def test_device_policy() -> None:
    pol = parse_device_policy(DEVICE_POLICY_DO)
    assert pol.device_owner == "com.example.mdm"
    assert pol.profile_owners == ("com.example.work",)
    none = parse_device_policy(DEVICE_POLICY_NONE)
    assert none.device_owner is None and none.profile_owners == ()
    with pytest.raises(BadDeviceData):
        parse_device_policy(DEVICE_POLICY_DO.replace(b"package=com.example.mdm",
                                                     b"package=`reboot`"))


def test_pm_list_packages() -> None:
    out = b"package:com.whatsapp\npackage:org.mozilla.firefox\n\npackage:com.whatsapp\n"
    assert parse_pm_packages(out) == ("com.whatsapp", "org.mozilla.firefox")
    assert parse_pm_packages(b"package:/data/app/~~x==/base.apk=com.a.b\n") == ("com.a.b",)
    assert parse_pm_packages(b"") == ()
    with pytest.raises(BadDeviceData):
        parse_pm_packages(b"Error: could not access the Package Manager\n")
    with pytest.raises(BadDeviceData):
        parse_pm_packages(b"package:com.x;reboot\n")
    with pytest.raises(BadDeviceData, match="more than"):
        parse_pm_packages(b"".join(b"package:a.b%d\n" % i for i in range(20)), max_packages=10)


def test_df() -> None:
    d = parse_df(DF_DATA)
    assert d.total_bytes == 115310256 * 1024 and d.used_bytes == 9633740 * 1024
    with pytest.raises(BadDeviceData, match="no line"):
        parse_df(DF_DATA.replace(b"/data\n", b"/cache\n"))
    with pytest.raises(BadDeviceData):
        parse_df(b"Filesystem Size Used Avail Use% Mounted on\n/dev/x 10G 1G 9G 10% /data\n")
    with pytest.raises(BadDeviceData, match="implausible"):
        parse_df(DF_DATA.replace(b"9633740", b"999999999"))


def test_small_values() -> None:
    assert parse_setting(b"null\n", "s") is None
    assert parse_setting(b"1\n", "s") == "1"
    assert parse_bool(b"true\n", "x") is True and parse_bool(b"false\n", "x") is False
    with pytest.raises(BadDeviceData):
        parse_bool(b"maybe\n", "x")
    with pytest.raises(BadDeviceData):
        parse_setting(b"a\x07b", "s")
    assert parse_ls_names(b".\n..\nDCIM\nDownload\n", "ls") == ("DCIM", "Download")


def test_decode_bounded() -> None:
    with pytest.raises(BadDeviceData, match="bytes of output"):
        decode_text(b"x" * 100, "thing", max_bytes=10)
