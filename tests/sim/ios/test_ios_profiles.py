"""Profiles are data: every bundled one loads and behaves as its file says."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymobiledevice3.lockdown import UsbmuxLockdownClient

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError
from wipeagent_sim.ios import (
    PhoneSpec,
    SimIosBench,
    SimIPhone,
    available_profiles,
    load_profile,
)

Connect = Callable[..., Awaitable[UsbmuxLockdownClient]]

EXPECTED = {"clean", "findmy_on", "supervised_mdm", "passcode_locked", "old_ios", "worn_battery"}


def test_bundled_profiles_load() -> None:
    assert set(available_profiles()) >= EXPECTED
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.name == name
        assert profile.battery, f"{name} has no battery entry"


@pytest.mark.parametrize(
    "text",
    [
        'name = "x"\n[state]\nfind_me = true\n',  # typo: unknown key
        'name = "x"\n[power]\nreboot_seconds = -1\n',
        "not toml at all [",
    ],
)
def test_bad_profile_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError):
        load_profile(path)


@pytest.mark.parametrize("name", ["nope", "../clean", "clean; rm -rf /"])
def test_unknown_or_hostile_profile_name(name: str) -> None:
    with pytest.raises(ConfigError):
        load_profile(name)


async def test_udids_follow_the_hardware_generation() -> None:
    clock = Clock(300)
    modern = await SimIPhone.create(load_profile("clean"), clock, seed="1")
    old = await SimIPhone.create(load_profile("old_ios"), clock, seed="1")
    other = await SimIPhone.create(load_profile("clean"), clock, seed="2")
    assert re.fullmatch(r"00008101-[0-9A-F]{16}", modern.udid)
    assert re.fullmatch(r"[0-9a-f]{40}", old.udid)
    assert modern.udid != other.udid
    assert f"{modern.ecid:016X}" == modern.udid.split("-")[1]


async def test_duplicate_udid_is_refused() -> None:
    same = "00008101-0000000000000001"
    with pytest.raises(ConfigError):
        async with SimIosBench([PhoneSpec("clean", same), PhoneSpec("worn_battery", same)]):
            pass


@pytest.mark.parametrize("bench", [["old_ios"]], indirect=True)
async def test_old_ios_session_uses_tls_1_2(bench: SimIosBench, pair: Connect) -> None:
    client = await pair(bench.phones[0].udid)
    try:
        ssl_object = client.service.writer.get_extra_info("ssl_object")
        assert ssl_object is not None and ssl_object.version() == "TLSv1.2"
        assert client.all_values["ProductVersion"] == "12.5.7"
    finally:
        await client.close()


@pytest.mark.parametrize("udid", ["../../etc", "00008101-XYZ", "a" * 300])
async def test_bad_fixed_udid_is_refused(udid: str) -> None:
    with pytest.raises(ConfigError):
        async with SimIosBench([PhoneSpec("clean", udid)]):
            pass
