"""Parsers for real Android command output: getprop, dumpsys, pm, df, settings.

Every value from a phone is untrusted. Parsers work on bytes, decode strictly (invalid
UTF-8 -> BadDeviceData naming what was being read), bound lengths, and validate each
value against the pattern of the field it is going into before it leaves this module.
Formats follow AOSP: getprop's "[key]: [value]" lines (system/core/toolbox/getprop.cpp),
BatteryService.dumpInternal, AccountManagerService.dumpUser ("Accounts: N",
"Account {name=..., type=...}"), OwnersData.dump ("Device Owner:", "Profile Owner (User
N):", "package=..."), `pm list packages` ("package:NAME"), toybox df.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wipeagent.errors import BadDeviceData

BAD_DATA_HINT = "the phone reported an implausible value: set it aside for inspection"

# Field patterns. A value failing its pattern is refused, never "cleaned up": a phone
# sending shell metacharacters in its model name is suspicious, not a typo.
SERIAL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._,()+/-]{0,63}$")  # manufacturer, model ...
TOKEN_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # device, board, hardware codenames
VERSION_RE = re.compile(r"^[A-Za-z0-9.]{1,16}$")
SDK_RE = re.compile(r"^[0-9]{1,3}$")
PATCH_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
FINGERPRINT_RE = re.compile(r"^[A-Za-z0-9._/:,+=-]{1,200}$")
PACKAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
ACCOUNT_TYPE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
PROP_KEY_RE = re.compile(rb"^[A-Za-z0-9._:@-]{1,256}$")
GETPROP_LINE_RE = re.compile(rb"^\[([^\]]*)\]: \[(.*)\]$")

MAX_VALUE_CHARS = 256


def decode_text(data: bytes, what: str, max_bytes: int = 1 << 20) -> str:
    """Strict UTF-8 decoding of a phone's output, bounded in size."""
    if len(data) > max_bytes:
        raise BadDeviceData(f"{what}: {len(data)} bytes of output (limit {max_bytes})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadDeviceData(
            f"{what}: invalid UTF-8 at byte {exc.start}", hint=BAD_DATA_HINT
        ) from exc


def check_value(value: str, pattern: re.Pattern[str], what: str) -> str:
    """Return `value` if it matches `pattern`, else BadDeviceData naming `what`."""
    if not pattern.fullmatch(value):
        shown = value[:80].encode("unicode_escape").decode("ascii")
        raise BadDeviceData(f"{what}: implausible value {shown!r}", hint=BAD_DATA_HINT)
    return value


def check_printable(value: str, what: str, max_len: int = 64) -> str:
    """Printable text without control characters, at most `max_len` characters."""
    if len(value) > max_len or not value.isprintable():
        shown = value[:80].encode("unicode_escape").decode("ascii")
        raise BadDeviceData(f"{what}: implausible value {shown!r}", hint=BAD_DATA_HINT)
    return value


# --------------------------------------------------------------------------------------
# getprop
# --------------------------------------------------------------------------------------


class Props:
    """The properties from `getprop`, kept as raw bytes until one is used.

    Decoding happens per property, so an error names the property that was bad and a
    bad property the agent never reads does not stop the session.
    """

    def __init__(self, raw: dict[str, bytes]) -> None:
        self._raw = raw

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def keys(self) -> list[str]:
        """All property names."""
        return sorted(self._raw)

    def text(self, key: str, default: str = "") -> str:
        """A property's value, strictly decoded and bounded; `default` if absent/empty."""
        raw = self._raw.get(key)
        if raw is None or raw == b"":
            return default
        value = decode_text(raw, f"property {key}", MAX_VALUE_CHARS * 4)
        if len(value) > MAX_VALUE_CHARS or not value.isprintable():
            shown = value[:80].encode("unicode_escape").decode("ascii")
            raise BadDeviceData(f"property {key}: implausible value {shown!r}",
                                hint=BAD_DATA_HINT)
        return value

    def get(self, key: str, pattern: re.Pattern[str], default: str = "") -> str:
        """A property validated against `pattern` (BadDeviceData naming it otherwise)."""
        value = self.text(key)
        if not value:
            return default
        return check_value(value, pattern, f"property {key}")

    def first(self, keys: tuple[str, ...], pattern: re.Pattern[str]) -> str:
        """The first non-empty property of `keys`, validated; "" if none is set."""
        for key in keys:
            value = self.get(key, pattern)
            if value:
                return value
        return ""


def parse_getprop(output: bytes, max_props: int = 4096) -> Props:
    """Parse the output of `getprop` (all properties): lines "[key]: [value]".

    Values that span several lines (rare) are ignored, as are lines that do not match.
    Trailing blanks and CR (CRLF line ends) are noise, not part of a line.
    """
    raw: dict[str, bytes] = {}
    for line in output.split(b"\n"):
        match = GETPROP_LINE_RE.match(line.rstrip(b" \t\r"))
        if not match:
            continue
        key, value = match.group(1), match.group(2)
        if not PROP_KEY_RE.match(key):
            continue
        if len(raw) >= max_props:
            raise BadDeviceData(f"getprop: more than {max_props} properties")
        raw[key.decode("ascii")] = value
    return Props(raw)


# --------------------------------------------------------------------------------------
# dumpsys battery
# --------------------------------------------------------------------------------------

BATTERY_HEALTH = {
    1: "unknown",
    2: "good",
    3: "overheat",
    4: "dead",
    5: "over_voltage",
    6: "unspecified_failure",
    7: "cold",
}
BATTERY_STATUS = {1: "unknown", 2: "charging", 3: "discharging", 4: "not_charging", 5: "full"}


@dataclass(frozen=True)
class Battery:
    """The figures of `dumpsys battery` (BatteryService) the agent uses."""

    level_percent: int | None
    health: str
    temperature_c: float | None
    voltage_mv: int | None
    status: str
    technology: str
    cycle_count: int | None


def _int_field(fields: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,10}", value):
        raise BadDeviceData(f"dumpsys battery: {key} {value[:40]!r} is not a number")
    number = int(value)
    if not lo <= number <= hi:
        raise BadDeviceData(f"dumpsys battery: {key} {number} out of range")
    return number


def parse_dumpsys_battery(output: bytes) -> Battery:
    """Parse `dumpsys battery` ("Current Battery Service state:" then "  key: value")."""
    text = decode_text(output, "dumpsys battery", 64 * 1024)
    if "Battery Service state" not in text:
        raise BadDeviceData("dumpsys battery: not a BatteryService dump")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key and len(fields) < 200:
            fields[key.strip().lower()] = value.strip()
    level = _int_field(fields, "level", 0, 10_000)
    scale = _int_field(fields, "scale", 1, 10_000) or 100
    percent = None if level is None else round(level * 100 / scale)
    if percent is not None and percent > 100:
        raise BadDeviceData(f"dumpsys battery: level {level} of {scale}")
    health_code = _int_field(fields, "health", 0, 100)
    status_code = _int_field(fields, "status", 0, 100)
    temp = _int_field(fields, "temperature", -1000, 1500)  # tenths of a degree Celsius
    # Android 14 added the cycle count to some dumps; OEMs use several spellings.
    cycles = None
    for key in ("cycle count", "battery cycle count", "charge cycle count", "cycle_count"):
        cycles = _int_field(fields, key, 0, 100_000)
        if cycles is not None:
            break
    technology = fields.get("technology", "")
    if technology and not TOKEN_RE.fullmatch(technology):
        raise BadDeviceData(f"dumpsys battery: technology {technology[:40]!r}")
    return Battery(
        level_percent=percent,
        health=BATTERY_HEALTH.get(health_code or 1, "unknown"),
        temperature_c=None if temp is None else temp / 10,
        voltage_mv=_int_field(fields, "voltage", 0, 100_000),
        status=BATTERY_STATUS.get(status_code or 1, "unknown"),
        technology=technology,
        cycle_count=cycles,
    )


# --------------------------------------------------------------------------------------
# dumpsys account
# --------------------------------------------------------------------------------------

ACCOUNT_LINE_RE = re.compile(r"^\s*Account \{name=(.*), type=([^}]*)\}\s*$")
ACCOUNTS_COUNT_RE = re.compile(r"^\s*Accounts: ([0-9]{1,6})\s*$")


@dataclass(frozen=True)
class Accounts:
    """Accounts from `dumpsys account`. Names are personal data: only counted here."""

    types: tuple[str, ...]
    declared_count: int

    @property
    def google(self) -> int:
        """How many accounts of type com.google (the ones that trigger FRP)."""
        return sum(1 for t in self.types if t == "com.google")


def parse_dumpsys_account(output: bytes) -> Accounts:
    """Parse AccountManagerService's dump: per user "Accounts: N" then N Account lines.

    BadDeviceData if the Account lines do not add up to the declared counts (a dump
    we do not understand must not read as "no accounts").
    """
    text = decode_text(output, "dumpsys account", 1 << 20)
    types: list[str] = []
    declared = 0
    seen_count = False
    for line in text.splitlines():
        count = ACCOUNTS_COUNT_RE.match(line)
        if count:
            declared += int(count.group(1))
            seen_count = True
            continue
        account = ACCOUNT_LINE_RE.match(line)
        if account:
            types.append(check_value(account.group(2), ACCOUNT_TYPE_RE, "account type"))
    if not seen_count:
        raise BadDeviceData("dumpsys account: no 'Accounts:' line; unknown format")
    if declared != len(types):
        raise BadDeviceData(
            f"dumpsys account: {declared} accounts declared, {len(types)} listed"
        )
    return Accounts(tuple(types), declared)


# --------------------------------------------------------------------------------------
# dumpsys device_policy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePolicy:
    """Device owner and profile owners from `dumpsys device_policy`."""

    device_owner: str | None
    profile_owners: tuple[str, ...] = field(default_factory=tuple)


def parse_device_policy(output: bytes) -> DevicePolicy:
    """Find the "Device Owner:" and "Profile Owner (User N):" sections and their
    "package=" lines (OwnersData.dump / OwnerInfo.dump)."""
    text = decode_text(output, "dumpsys device_policy", 4 << 20)
    device_owner: str | None = None
    profile_owners: list[str] = []
    section: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Device Owner:"):
            section = "device"
            continue
        if stripped.startswith("Profile Owner (User"):
            section = "profile"
            continue
        if section and stripped.startswith("package="):
            package = check_value(stripped[len("package=") :], PACKAGE_RE, "owner package")
            if section == "device":
                device_owner = package
            else:
                profile_owners.append(package)
            section = None
    return DevicePolicy(device_owner, tuple(profile_owners))


# --------------------------------------------------------------------------------------
# pm list packages
# --------------------------------------------------------------------------------------


def parse_pm_packages(output: bytes, max_packages: int = 10_000) -> tuple[str, ...]:
    """Parse `pm list packages [-3]`: one "package:NAME" per line (with -f:
    "package:/path/base.apk=NAME")."""
    text = decode_text(output, "pm list packages", 4 << 20)
    names: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if not line.startswith("package:"):
            raise BadDeviceData(f"pm list packages: unexpected line {line[:60]!r}")
        name = line[len("package:") :]
        if "=" in name:
            name = name.rsplit("=", 1)[1]
        names.append(check_value(name, PACKAGE_RE, "package name"))
        if len(names) > max_packages:
            raise BadDeviceData(f"pm list packages: more than {max_packages} packages")
    return tuple(sorted(set(names)))


# --------------------------------------------------------------------------------------
# df
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskUsage:
    """One filesystem's figures from df, in bytes."""

    total_bytes: int
    used_bytes: int
    available_bytes: int
    mount: str


def parse_df(output: bytes, mount: str = "/data") -> DiskUsage:
    """Parse toybox `df` output ("Filesystem 1K-blocks Used Available Use% Mounted on")."""
    text = decode_text(output, "df", 64 * 1024)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BadDeviceData("df: empty output")
    header = re.search(r"\b([0-9]+)([Kk])?-blocks\b", lines[0])
    if not header:
        raise BadDeviceData(f"df: unknown header {lines[0][:80]!r}")
    unit = int(header.group(1)) * (1024 if header.group(2) else 1)
    for line in lines[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[-1] == mount:
            try:
                total, used, avail = (int(p) for p in parts[-5:-2])
            except ValueError as exc:
                raise BadDeviceData(f"df: bad figures in {line[:80]!r}") from exc
            if min(total, used, avail) < 0 or used > total or total > 1 << 44:
                raise BadDeviceData(f"df: implausible figures in {line[:80]!r}")
            return DiskUsage(total * unit, used * unit, avail * unit, mount)
    raise BadDeviceData(f"df: no line for {mount}")


# --------------------------------------------------------------------------------------
# small values
# --------------------------------------------------------------------------------------


BOOT_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UPTIME_RE = re.compile(r"^([0-9]{1,10}(?:\.[0-9]{1,3})?) [0-9]{1,12}(?:\.[0-9]{1,3})?$")


def parse_boot_id(output: bytes) -> str:
    """/proc/sys/kernel/random/boot_id: one lower-case UUID."""
    text = decode_text(output, "boot_id", 4096).strip()
    return check_value(text, BOOT_ID_RE, "boot_id")


def parse_uptime(output: bytes) -> float:
    """/proc/uptime: "<seconds since boot> <idle seconds>"."""
    text = decode_text(output, "/proc/uptime", 4096).strip()
    match = UPTIME_RE.fullmatch(text)
    if not match:
        raise BadDeviceData(f"/proc/uptime: unexpected {text[:60]!r}", hint=BAD_DATA_HINT)
    return float(match.group(1))


def parse_setting(output: bytes, what: str) -> str | None:
    """`settings get NS KEY` prints the value or "null" when unset."""
    text = check_printable(decode_text(output, what, 4096).strip(), what, 1024)
    return None if text == "null" else text


def parse_bool(output: bytes, what: str) -> bool:
    """A command that prints "true" or "false" (locksettings get-disabled)."""
    text = decode_text(output, what, 4096).strip()
    if text not in ("true", "false"):
        raise BadDeviceData(f"{what}: expected true/false, got {text[:40]!r}")
    return text == "true"


def parse_ls_names(output: bytes, what: str, max_entries: int = 10_000) -> tuple[str, ...]:
    """Names listed by `ls -a` (one per line), without "." and "..". Trailing blanks and
    blank lines are noise (a name is never read as empty)."""
    text = decode_text(output, what, 4 << 20)
    names = [n for n in (line.rstrip(" \t") for line in text.splitlines())
             if n and n not in (".", "..")]
    if len(names) > max_entries:
        raise BadDeviceData(f"{what}: more than {max_entries} entries")
    return tuple(check_printable(n, what, 255) for n in names)
