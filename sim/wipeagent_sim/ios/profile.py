"""Simulated iPhone profiles: a phone's identity, state and behaviour as data.

Profiles are TOML files in ``sim/wipeagent_sim/ios/profiles/`` (one file, one scenario) or any
path given by the caller. Loading validates them (pydantic, unknown keys rejected), so a
typo in a profile fails loudly instead of silently simulating the wrong phone.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wipeagent.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Identity(_Model):
    """Values lockdownd reports about the hardware and OS."""

    product_type: str = "iPhone13,2"
    product_name: str = "iPhone OS"
    product_version: str = "17.5.1"
    build_version: str = "21F90"
    device_class: str = "iPhone"
    device_name: str = "iPhone"
    hardware_model: str = "D53gAP"
    model_number: str = "MGJ93"
    region_info: str = "LL/A"
    chip_id: int = Field(default=0x8101, ge=0, le=0xFFFFFFFF)
    board_id: int = Field(default=0x0C, ge=0)
    cpu_architecture: str = "arm64e"
    device_color: str = "1"
    usb_product_id: int = Field(default=0x12A8, ge=0, le=0xFFFF)
    tls_max_version: Literal["1.2", "1.3"] = "1.3"


class State(_Model):
    """What the phone is like right now (changes on erase)."""

    activation_state: str = "Activated"
    find_my: bool = False
    passcode_set: bool = False
    locked: bool = False
    """Passcode set and the phone has not been unlocked: it refuses to pair."""
    supervised: bool = False
    user_data_bytes: int = Field(default=24_000_000_000, ge=0)
    total_data_capacity: int = Field(default=119_000_000_000, gt=0)


class Trust(_Model):
    """The "Trust This Computer?" prompt."""

    auto_accept: bool = True
    """False: nobody answers until trust() / deny() is called (TOML has no null)."""
    auto_accept_after: float = Field(default=3.0, ge=0)
    """Bench seconds before the simulated person answers the prompt."""
    deny: bool = False
    """The person taps Don't Trust (after auto_accept_after)."""


class Power(_Model):
    """Timings of reboots and erases, in bench seconds."""

    reboot_seconds: float = Field(default=45.0, ge=0)
    erase_seconds: float = Field(default=90.0, ge=0)
    """How long the erase itself runs before the reboot (the phone is gone meanwhile)."""


class Erase(_Model):
    """How the phone answers erase requests."""

    mobilebackup2_error: int = 0
    """Non-zero: mobilebackup2 EraseDevice fails with this ErrorCode (and does nothing)."""
    mobilebackup2_error_description: str = ""
    activation_lock_survives: bool = True
    """After an erase with Find My on, the phone stays associated (Activation Lock)."""
    state_after: State | None = None
    """State after an erase; None = factory state (Unactivated, no passcode, no data)."""
    # Phones that lie (all off: an honest erase). The simulator keeps the truth (was the
    # data volume wiped?) apart from what the phone says.
    acknowledge_only: bool = False
    """EraseDevice is answered with success, then nothing happens: no erase, no restart,
    the phone stays connected."""
    reboot_only: bool = False
    """The phone restarts after EraseDevice but erases nothing: it comes back unchanged."""
    keep_pairings: bool = False
    """The erase resets the phone but its pairing store (on the data volume) survives:
    the pre-erase pairing is still accepted."""
    keep_data: bool = False
    """The phone comes back looking new (Unactivated, a new identity key, pairings
    forgotten) while the data stays: the data volume is as full as before."""
    udid_after: str = ""
    """Lockdown reports this UniqueDeviceID after the erase (usbmuxd keeps the old one)."""
    values_after: dict[str, Any] = Field(default_factory=dict)
    """Default-domain lockdown values after the erase, of any type (merged over the
    generated ones): answers of unexpected types."""


class Faults(_Model):
    """A misbehaving phone, for tests of the agent's defences (all off by default)."""

    malformed_values: bool = False
    """A paired GetValue of the whole default domain is answered with a frame that is not
    a plist."""
    oversized_frame: bool = False
    """A paired GetValue of the whole default domain is answered with a 64 MiB length
    prefix (and then the connection drops)."""
    tls_failure: bool = False
    """StartSession is accepted, then the phone answers the TLS handshake with an alert."""
    never_returns: bool = False
    """After an erase the phone stays off (unplugged mid-erase, dead battery)."""


class Expect(_Model):
    """How the agent must end a session with this phone (demo and end-to-end tests)."""

    outcome: Literal["erased", "erased_with_exceptions", "not_erased"] = "erased"
    reason: str = ""
    """A reason code the session must report (not_erased), e.g. "find_my"."""
    category: Literal["", "clear", "purge"] = ""
    checks: list[str] = Field(default_factory=list)
    """Check ids that must not pass in this phone's verification (the reason, named)."""
    demo: bool = True
    """Part of `wipeagent demo`."""


class Profile(_Model):
    """One simulated iPhone."""

    name: str
    description: str = ""
    expect: Expect = Expect()
    faults: Faults = Faults()
    identity: Identity = Identity()
    state: State = State()
    trust: Trust = Trust()
    power: Power = Power()
    erase: Erase = Erase()
    battery: dict[str, Any] = Field(default_factory=dict)
    """The IOPMPowerSource IORegistry entry (CycleCount, DesignCapacity, ...)."""
    cloud_configuration: dict[str, Any] = Field(default_factory=dict)
    """MCInstall GetCloudConfiguration answer (MDM / DEP enrollment)."""
    mobile_gestalt: dict[str, Any] = Field(default_factory=dict)
    extra_values: dict[str, Any] = Field(default_factory=dict)
    """More lockdown default-domain values (merged over the generated ones)."""
    domains: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """More lockdown domains, e.g. com.apple.mobile.battery."""


_PACKAGE = "wipeagent_sim.ios.profiles"


def available_profiles() -> list[str]:
    """Names of the bundled profiles."""
    root = resources.files(_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a bundled profile by name, or a TOML file by path. Raises ConfigError."""
    text: str
    source = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        if not source.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"bad iOS profile name {source!r}")
        resource = resources.files(_PACKAGE).joinpath(f"{source}.toml")
        if not resource.is_file():
            raise ConfigError(
                f"no iOS profile {source!r}",
                hint=f"choose one of: {', '.join(available_profiles())}",
            )
        text = resource.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
        return Profile.model_validate(data)
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise ConfigError(f"iOS profile {source!r} is invalid: {e}") from e
