"""Simulated Android phone profiles: one TOML file per scenario, validated on load.

A profile is data, not code: a new scenario (a phone with an MDM owner, a phone that hangs
on `dumpsys battery`) is a new file in `sim/wipeagent_sim/android/profiles/`.

Byte escapes. Phones are untrusted input, so profiles must be able to hold bytes that are
not valid UTF-8. In every *value* the simulator hands back to a client (properties,
settings, account names and types, package names, file `content`) the four characters
`\\xNN` (backslash, `x`, two hex digits) stand for the single byte 0xNN, and `\\\\` for one
backslash. Write such values as TOML literal strings so TOML itself leaves the backslash
alone: `"ro.product.model" = 'Pixel \\xff\\xfe 8'`. Decoded values are kept as `str` with
undecodable bytes as surrogates (`errors="surrogateescape"`) and encoded back to the very
same bytes on output.

Schema (every table rejects unknown keys, so a typo is an error naming the file and key):

    [meta]           description, expected_outcome, expected_reason, expected_category,
                     expected_checks (check ids that must not pass), demo
    [device]         identity, build, security and boot facts (see `DeviceSection`)
    [authorisation]  the "Allow USB debugging?" prompt: prompt = accept|refuse|manual
    [battery]        health figures as BatteryService reports them
    [storage]        /data and /system sizes for df and dumpsys diskstats
    [properties]     extra or overriding system properties (getprop)
    [settings.system|secure|global]   user-changed settings (wiped by a reset)
    [[accounts]]     type, name
    [[packages]]     name, system, enabled, path, version_code
    [device_owner]   package, receiver, name (an MDM / device-owner app)
    dirs = [...]     extra user directories; [[files]] path, content | size, mtime, mode
    [telephony]      device_ids per SIM slot (IMEI or MEID, as getDeviceIdForPhone answers),
                     answer = value | null | security_exception | no_service, label_imeis
    [quirks]         frozen_settings (writes ignored), adb_stays_on
    [faults]         "service prefix" = malformed_packet | wrong_checksum |
                     oversized_payload | hang | disconnect
    [lie]            how the phone misbehaves around its reset (see `LieSection`): a
                     reset that does nothing, wipes only part, is faked without a
                     reboot; another identity, encryption or no authorisation after it;
                     never back; [lie.outputs_after] answers built to confuse parsers
    [noise]          trailing_spaces, blank_lines, crlf in every answer (harmless)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wipeagent.clock import Clock

if TYPE_CHECKING:
    from wipeagent_sim.android.phone import SimAndroidPhone

PROFILE_DIR = Path(__file__).with_name("profiles")

# A profile file is small hand-written data; anything bigger is a mistake or an attack.
MAX_PROFILE_BYTES = 1 << 20
# Generated file contents are held in memory; keep a simulated phone small.
MAX_FILE_BYTES = 8 << 20

FaultName = Literal["malformed_packet", "wrong_checksum", "oversized_payload", "hang", "disconnect"]
Outcome = Literal["erased", "erased_with_exceptions", "not_erased"]
Category = Literal["purge", "clear"]

_SETTINGS_VALUE = str | int | float | bool
_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class ProfileError(ValueError):
    """A profile file is missing, unreadable or invalid; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetaSection(_Strict):
    """What the scenario is and what the agent is expected to conclude about it."""

    description: str = Field(min_length=1, max_length=500)
    expected_outcome: Outcome
    expected_reason: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    expected_category: Category | None = None
    # Check ids that must not pass in this phone's verification (the reason, named).
    expected_checks: list[str] = Field(default_factory=list)
    demo: bool = True

    @model_validator(mode="after")
    def _reason_for_not_erased(self) -> MetaSection:
        if self.expected_outcome == "not_erased" and not self.expected_reason:
            raise ValueError("expected_reason is required when expected_outcome = 'not_erased'")
        if self.expected_outcome != "not_erased" and self.expected_category is None:
            raise ValueError("expected_category is required when the phone gets erased")
        return self


class DeviceSection(_Strict):
    """Identity, build and security state of the phone (mostly `ro.*` properties)."""

    # The serial names a directory under state_dir: keep it to a safe path component.
    serial: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    manufacturer: str
    brand: str
    model: str
    name: str = Field(description="ro.product.name")
    device: str = Field(description="ro.product.device")
    hardware: str
    android_version: str = Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}$")
    sdk: int = Field(ge=21, le=40)
    security_patch: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
    build_id: str = Field(pattern=r"^[A-Z0-9.]{1,40}$")
    incremental: str = Field(pattern=r"^[A-Za-z0-9._]{1,40}$")
    build_type: Literal["user", "userdebug", "eng"] = "user"
    build_tags: str = "release-keys"
    fingerprint: str | None = None
    bootloader: str | None = None
    baseband: str | None = None
    abi: str = "arm64-v8a"
    kernel: str = Field(description="uname -r")
    screen_size: str = Field(default="1080x2400", pattern=r"^[0-9]{2,5}x[0-9]{2,5}$")
    encryption: Literal["file", "block", "none"]
    lock_screen: Literal["none", "swipe", "pin", "pattern", "password"] = "swipe"
    verified_boot_state: Literal["green", "yellow", "orange", "red"] = "green"
    bootloader_locked: bool = True
    su_path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9_/.-]{1,200}$")
    reboot_seconds: float = Field(default=45.0, ge=0, le=3600)
    boot_count: int = Field(default=12, ge=1)
    uptime_s: float = Field(default=86_400.0, ge=0, description="seconds since boot at start")
    adb_enabled: bool = True
    # None: what adbd of that Android version advertises (ls_v2 arrived with Android 11).
    adb_features: str | None = Field(default=None, pattern=r"^[a-z0-9_]+(,[a-z0-9_]+)*$")
    timezone: str = "Europe/London"


class AuthorisationSection(_Strict):
    """How the simulated person answers "Allow USB debugging?"."""

    prompt: Literal["accept", "refuse", "manual"] = "accept"
    accept_after: float = Field(default=3.0, ge=0, le=3600)


class BatterySection(_Strict):
    """Battery figures in BatteryService units (tenths of a degree, millivolts, µAh)."""

    level: int = Field(ge=0, le=100)
    health: Literal[
        "unknown", "good", "overheat", "dead", "over_voltage", "unspecified_failure", "cold"
    ] = "good"
    status: Literal["unknown", "charging", "discharging", "not_charging", "full"] = "charging"
    temperature: int = Field(default=280, ge=-400, le=1000)
    voltage: int = Field(default=4100, ge=0, le=10000)
    technology: str = "Li-ion"
    charge_counter: int = Field(default=3000000, ge=0)
    # Exposed through /sys/class/power_supply/battery/cycle_count when the vendor allows it.
    cycle_count: int | None = Field(default=None, ge=0)
    ac_powered: bool = False
    usb_powered: bool = True
    max_charging_current: int = 500000
    max_charging_voltage: int = 5000000


class StorageSection(_Strict):
    """Sizes in KiB. `user_data_kb` is user data not modelled as files; a reset frees it."""

    data_total_kb: int = Field(gt=0)
    data_system_used_kb: int = Field(ge=0)
    user_data_kb: int = Field(default=0, ge=0)
    system_total_kb: int = Field(default=6019456, gt=0)
    block_device: str = "/dev/block/dm-48"

    @model_validator(mode="after")
    def _fits(self) -> StorageSection:
        if self.data_system_used_kb + self.user_data_kb > self.data_total_kb:
            raise ValueError("data_system_used_kb + user_data_kb exceeds data_total_kb")
        return self


class AccountEntry(_Strict):
    """An account as AccountManager holds it."""

    type: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=500)


class PackageEntry(_Strict):
    """An installed package."""

    name: str = Field(min_length=1, max_length=300)
    system: bool = False
    enabled: bool = True
    path: str | None = None
    version_code: int = Field(default=1, ge=0)
    # APK, data and caches of a third-party app on /data (KiB); a reset frees them.
    size_kb: int = Field(default=150_000, ge=0)


class DeviceOwnerEntry(_Strict):
    """A device-owner (MDM) admin component."""

    package: str
    receiver: str
    name: str = ""


class FileEntry(_Strict):
    """A user file; `content` (with byte escapes) or `size` (deterministic bytes)."""

    path: str = Field(min_length=2, max_length=1000)
    content: str | None = None
    size: int | None = Field(default=None, ge=0, le=MAX_FILE_BYTES)
    mtime: int = Field(default=1_700_000_000, ge=0)
    mode: int | None = Field(default=None, ge=0, le=0o7777)

    @model_validator(mode="after")
    def _one_source(self) -> FileEntry:
        if (self.content is None) == (self.size is None):
            raise ValueError("give exactly one of content or size")
        return self


class TelephonySection(_Strict):
    """What the phone's telephony service (`iphonesubinfo`) answers about its identifiers.

    `device_ids[i]` is what IPhoneSubInfo.getDeviceIdForPhone(i) returns for SIM slot i:
    the IMEI of a GSM/LTE phone, the MEID (14 hex digits) of a CDMA one; a phoneId the
    phone does not have is served as slot 0, as PhoneSubInfoController does. `answer`
    makes the phone refuse (SecurityException), answer null, or have no telephony service
    at all. `label_imeis` is what is printed on the box and SIM tray (what the technician
    scans); by default the IMEIs among `device_ids`."""

    device_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=4)
    answer: Literal["value", "null", "security_exception", "no_service"] = "value"
    label_imeis: list[Annotated[str, Field(pattern=r"^[0-9]{15}$")]] | None = Field(
        default=None, max_length=4)


class QuirksSection(_Strict):
    """Phones that do not do what they are told (to test that the bench notices):
    settings whose writes are silently ignored, an adbd that keeps running when
    adb_enabled goes to 0."""

    frozen_settings: list[Annotated[str, Field(pattern=r"^[a-z_.]{1,64}$")]] = Field(
        default_factory=list)
    adb_stays_on: bool = False


class OutputSpec(_Strict):
    """A command's stdout as the phone answers it: `text` (byte escapes allowed), repeated
    and cut to exactly `repeat_to_bytes` bytes when that is given."""

    text: str = Field(max_length=64 * 1024)
    repeat_to_bytes: int | None = Field(default=None, ge=1, le=MAX_FILE_BYTES)


KeptItem = Literal["user_files", "canary_files", "canary_setting"]


class LieSection(_Strict):
    """How a phone misbehaves around its reset (`cmd testharness enable`). All off: an
    honest phone. The simulator keeps the truth (what really happened to the data) apart
    from what the phone says, so tests can check the agent's verdict against it."""

    # full: the honest reset. none: answers success and wipes nothing. partial: wipes
    # accounts, apps and settings but keeps what `keep` names. fake: makes the shell's
    # view look freshly reset (accounts, apps, files, settings, boot_count 1) while the
    # data stays on the phone.
    reset: Literal["full", "none", "partial", "fake"] = "full"
    keep: list[KeptItem] = Field(default_factory=list)
    # True: goes down and boots again (a new boot id, uptime from 0). False: does not
    # reboot; with reset "none" it stays connected, otherwise only adbd restarts (the
    # connection drops for `adbd_restart_seconds`) while the kernel keeps running.
    reboot: bool = True
    adbd_restart_seconds: float = Field(default=3.0, ge=0, le=600)
    spoof_boot_id: bool = False  # reports a new boot id although it did not reboot
    encryption_after: Literal["file", "block", "none"] | None = None
    # Another phone answers after the reboot: these identity properties change.
    serial_after: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    revoke_adb_keys: bool = False  # forgets the bench's key; nobody taps Allow again
    never_returns: bool = False  # stays off after going down for the reset
    # Command line -> stdout the phone answers instead, once the reset has happened
    # (answers built to confuse the agent's parsers).
    outputs_after: dict[str, OutputSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> LieSection:
        if self.keep and self.reset != "partial":
            raise ValueError("keep applies to reset = 'partial' only")
        if self.reset == "partial" and not self.keep:
            raise ValueError("reset = 'partial' needs keep")
        return self


class NoiseSection(_Strict):
    """Harmless noise in every answer of an honest phone (old adb in PTY mode sends CRLF;
    some OEM builds pad lines): the agent must still read it right."""

    trailing_spaces: bool = False
    blank_lines: bool = False
    crlf: bool = False


class PhoneProfile(_Strict):
    """A whole profile file, validated."""

    meta: MetaSection
    device: DeviceSection
    authorisation: AuthorisationSection = AuthorisationSection()
    battery: BatterySection
    storage: StorageSection
    properties: dict[str, str] = Field(default_factory=dict)
    settings: dict[Literal["system", "secure", "global"], dict[str, _SETTINGS_VALUE]] = Field(
        default_factory=dict
    )
    accounts: list[AccountEntry] = Field(default_factory=list)
    packages: list[PackageEntry] = Field(default_factory=list)
    device_owner: DeviceOwnerEntry | None = None
    dirs: list[Annotated[str, Field(min_length=2, max_length=1000)]] = Field(default_factory=list)
    files: list[FileEntry] = Field(default_factory=list)
    faults: dict[str, FaultName] = Field(default_factory=dict)
    # Without a [telephony] section the service exists but answers null (no IMEI known).
    telephony: TelephonySection = TelephonySection(answer="null")
    quirks: QuirksSection = QuirksSection()
    lie: LieSection = LieSection()
    noise: NoiseSection = NoiseSection()


@dataclass(frozen=True)
class ProfileInfo:
    """A profile as `list_profiles` describes it."""

    name: str
    path: Path
    description: str
    expected_outcome: Outcome
    expected_reason: str | None
    expected_category: Category | None
    demo: bool
    expected_checks: tuple[str, ...] = ()


_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|\\)")


def decode_escapes(value: str) -> str:
    """Apply the profile byte-escape convention (see the module docstring).

    Returns a `str` whose invalid-UTF-8 bytes are surrogates; encode it with
    `encode_value` to get the bytes back.
    """
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(value):
        out += value[pos : match.start()].encode("utf-8", "surrogateescape")
        escape = match.group(1)
        out += b"\\" if escape == "\\" else bytes([int(escape[1:], 16)])
        pos = match.end()
    out += value[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


def encode_value(value: str) -> bytes:
    """The bytes a decoded profile value stands for."""
    return value.encode("utf-8", "surrogateescape")


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"invalid profile {path}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def read_profile(path: Path) -> PhoneProfile:
    """Parse and validate one profile file; raises ProfileError naming the file and key."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from exc
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"profile {path} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"profile {path} is not valid TOML: {exc}") from exc
    try:
        return PhoneProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_format_validation_error(path, exc)) from exc


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A bundled profile name (`pixel8-clean`) or a path to a .toml file."""
    text = str(name_or_path)
    if _PROFILE_NAME.match(text):
        path = PROFILE_DIR / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(info.name for info in list_profiles())
            raise ProfileError(f"no bundled profile named {text!r} (known: {known})")
        return path
    path = Path(text)
    if path.suffix != ".toml":
        raise ProfileError(f"{text!r} is neither a bundled profile name nor a .toml file")
    return path


def list_profiles() -> list[ProfileInfo]:
    """All bundled profiles, sorted by name (each one validated)."""
    infos = []
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        meta = read_profile(path).meta
        infos.append(
            ProfileInfo(
                name=path.stem,
                path=path,
                description=meta.description,
                expected_outcome=meta.expected_outcome,
                expected_reason=meta.expected_reason,
                expected_category=meta.expected_category,
                demo=meta.demo,
                expected_checks=tuple(meta.expected_checks),
            )
        )
    return infos


def load_profile(name_or_path: str | Path, *, state_dir: Path, clock: Clock) -> SimAndroidPhone:
    """Build a simulated phone from a bundled profile name or a profile file path.

    `state_dir` holds what must survive a process restart (authorised ADB keys, under
    `state_dir/<serial>/adb_keys`).
    """
    # Imported here: phone.py imports this module's schema at import time.
    from wipeagent_sim.android.phone import SimAndroidPhone

    path = resolve_profile_path(name_or_path)
    return SimAndroidPhone(read_profile(path), name=path.stem, state_dir=state_dir, clock=clock)
