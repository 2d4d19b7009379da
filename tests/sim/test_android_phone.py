"""The simulated Android phone: profiles, ADB keys, power cycles and resets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from wipeagent.clock import Clock
from wipeagent_sim.adb.backend import AdbDeviceBackend
from wipeagent_sim.android.phone import SimAndroidPhone
from wipeagent_sim.android.profiles import (
    PROFILE_DIR,
    ProfileError,
    decode_escapes,
    encode_value,
    list_profiles,
    load_profile,
)

FAST = Clock(speed=1000)
KEY = base64.b64encode(bytes(range(256)) * 2) + b" bench@station-1\x00"
OTHER_KEY = base64.b64encode(b"\x01" * 512) + b" someone@laptop"

Maker = Callable[[str], SimAndroidPhone]


@pytest.fixture
def make(tmp_path: Path) -> Maker:
    def _make(name: str) -> SimAndroidPhone:
        return load_profile(name, state_dir=tmp_path, clock=FAST)

    return _make


# --- profiles -----------------------------------------------------------------------------

REQUIRED = {
    "pixel8-clean": ("erased", None, "purge", True),
    "samsung-frp": ("not_erased", "google_account", None, True),
    "locked": ("not_erased", "lock_screen", None, True),
    "android9": ("erased_with_exceptions", None, "purge", True),
    "unencrypted": ("erased", None, "clear", True),
    "rooted": ("erased_with_exceptions", None, "purge", True),
}
BAD = {"bad-utf8", "bad-metachar", "bad-hang", "bad-disconnect", "bad-checksum",
       "bad-oversized", "bad-malformed"}  # fmt: skip


def test_all_profiles_listed_with_expectations() -> None:
    infos = {info.name: info for info in list_profiles()}
    assert set(REQUIRED) | BAD <= set(infos)
    for name, (outcome, reason, category, demo) in REQUIRED.items():
        info = infos[name]
        assert (info.expected_outcome, info.expected_reason) == (outcome, reason), name
        assert (info.expected_category, info.demo) == (category, demo), name
    assert all(not infos[name].demo for name in BAD)


@pytest.mark.parametrize("name", sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
async def test_every_profile_loads_and_answers(name: str, make: Maker) -> None:
    phone = make(name)
    assert isinstance(phone.serial, str) and phone.serial
    assert phone.banner().startswith(b"device::ro.product.name=")
    result = await phone.shell("getprop ro.serialno")
    if phone.profile.noise.crlf or phone.profile.noise.blank_lines:
        # Noise: CRLF line ends, blank lines and trailing spaces around the same answer.
        assert result.stdout.replace(b"\r", b"").split() == [phone.serial.encode()]
    else:
        assert result.stdout == phone.serial.encode() + b"\n"


def test_phone_satisfies_backend_protocol(make: Maker) -> None:
    backend: AdbDeviceBackend = make("pixel8-clean")  # checked by mypy on the package
    assert backend.adb_enabled()


def test_profile_facts(make: Maker) -> None:
    props = make("android9").properties()
    assert props["ro.build.version.sdk"] == "28"
    assert props["ro.build.fingerprint"] == (
        "Nokia/Crystal_00WW/CTL_sprout:9/PPR1.180610.011/00WW_3_54C:user/release-keys"
    )
    s23 = make("samsung-frp").properties()
    assert s23["ro.build.fingerprint"] == (
        "samsung/dm1qxxx/dm1q:14/UP1A.231005.007/S911BXXS3BXF1:user/release-keys"
    )
    assert make("unencrypted").properties()["ro.crypto.state"] == "unencrypted"


def _write_profile(tmp_path: Path, replace: tuple[str, str] | None = None, extra: str = "") -> Path:
    text = (PROFILE_DIR / "pixel8-clean.toml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / "custom.toml"
    path.write_text(text + extra)
    return path


@pytest.mark.parametrize(
    ("replace", "extra", "fragment"),
    [
        (("sdk = 34", "sdk = 'fourteen'"), "", "device.sdk"),
        (("boot_count = 37", "boot_count = 37\ncolour = 'blue'"), "", "device.colour"),
        (('serial = "38211FDH2004NJ"', 'serial = "../../etc"'), "", "device.serial"),
        (('expected_outcome = "erased"', 'expected_outcome = "not_erased"'), "", "meta"),
        (None, '\n[faults]\n"shell:" = "explode"\n', "faults.shell:"),
        (('prompt = "accept"', 'prompt = "maybe"'), "", "authorisation.prompt"),
    ],
)
def test_invalid_profile_names_file_and_key(
    tmp_path: Path, replace: tuple[str, str] | None, extra: str, fragment: str
) -> None:
    path = _write_profile(tmp_path, replace, extra)
    with pytest.raises(ProfileError) as info:
        load_profile(path, state_dir=tmp_path, clock=FAST)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_unknown_profile_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no bundled profile named 'nokia-3310'"):
        load_profile("nokia-3310", state_dir=tmp_path, clock=FAST)
    broken = tmp_path / "broken.toml"
    broken.write_text("[meta\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(broken, state_dir=tmp_path, clock=FAST)


def test_byte_escape_convention() -> None:
    assert encode_value(decode_escapes(r"Pixel \xff 8")) == b"Pixel \xff 8"
    assert encode_value(decode_escapes(r"a\\xffb")) == b"a\\xffb"
    assert decode_escapes("plain €") == "plain €"


# --- ADB keys and the authorisation prompt -------------------------------------------------


async def test_accepted_key_persists_across_recreation(tmp_path: Path, make: Maker) -> None:
    phone = make("pixel8-clean")
    assert not phone.is_key_authorised(KEY)
    assert await phone.ask_user_to_authorise(KEY) is True
    assert phone.is_key_authorised(KEY)
    keys_file = tmp_path / phone.serial / "adb_keys"
    assert keys_file.read_text().startswith(KEY[:40].decode())
    again = make("pixel8-clean")  # a new process: same state_dir, fresh phone
    assert again.is_key_authorised(KEY)
    assert not again.is_key_authorised(OTHER_KEY)
    assert not again.is_key_authorised(b"not base64 at all!!")


async def test_refusing_prompt(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, ('prompt = "accept"', 'prompt = "refuse"'))
    phone = load_profile(path, state_dir=tmp_path, clock=FAST)
    assert await phone.ask_user_to_authorise(KEY) is False
    assert not phone.is_key_authorised(KEY)


async def test_manual_prompt_waits_for_the_technician(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, ('prompt = "accept"', 'prompt = "manual"'))
    phone = load_profile(path, state_dir=tmp_path, clock=FAST)
    # Nobody answers: the client's own timeout ends the wait, and the dialog goes away.
    with pytest.raises(TimeoutError):
        await FAST.wait_for(phone.ask_user_to_authorise(KEY), 5)
    assert phone.pending_authorisations() == 0
    assert phone.accept_pending_authorisation() is False
    waiting = asyncio.create_task(phone.ask_user_to_authorise(KEY))
    await asyncio.sleep(0.01)
    assert phone.pending_authorisations() == 1
    assert phone.accept_pending_authorisation() is True
    assert await waiting is True
    assert phone.is_key_authorised(KEY)


# --- Test Harness Mode ----------------------------------------------------------------------


async def test_testharness_refused_with_lock_screen(make: Maker) -> None:
    phone = make("locked")
    result = await phone.shell("cmd testharness enable")
    assert result.exit_code == 2
    assert result.stderr == b"Test Harness Mode cannot be enabled if there is a lock screen\n"
    await phone.wait_power_cycles()
    assert phone.counters.power_cycles == 0


async def test_testharness_unknown_before_android10(make: Maker) -> None:
    phone = make("android9")
    result = await phone.shell("cmd testharness enable")
    assert (result.exit_code, result.stdout) == (20, b"")
    assert result.stderr == b"cmd: Can't find service: testharness\n"
    await phone.wait_power_cycles()
    assert phone.counters.power_cycles == 0
    assert phone.account_list()  # nothing wiped


async def test_testharness_reset_wipes_user_state_and_keeps_key(make: Maker) -> None:
    # The S23 has a swipe (insecure) lock, so the phone itself accepts Test Harness Mode;
    # refusing it because of the Google account is the agent's policy, not the phone's.
    phone = make("samsung-frp")
    assert await phone.ask_user_to_authorise(KEY)
    await phone.shell("settings put global custom_key 1; echo x > /data/local/tmp/probe")
    await phone.shell("setprop persist.debug.wipe 1")
    system_before = {p.name for p in phone.packages if p.system}
    assert phone.account_list() and phone.third_party_packages() and phone.user_files()

    result = await phone.shell("cmd testharness enable")
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"", b"")
    await phone.wait_power_cycles()

    assert phone.counters.history == ["testharness"]
    assert phone.account_list() == []
    assert phone.third_party_packages() == []
    assert {p.name for p in phone.packages} == system_before
    assert phone.user_files() == {}
    assert (await phone.shell("ls /sdcard")).stdout.decode().split() == [
        "Alarms", "Android", "Audiobooks", "DCIM", "Documents", "Download", "Movies", "Music",
        "Notifications", "Pictures", "Podcasts", "Recordings", "Ringtones",
    ]  # fmt: skip
    props = phone.properties()
    assert props["persist.sys.test_harness"] == "1"
    assert "persist.debug.wipe" not in props
    settings = phone.settings
    assert settings["global"]["boot_count"] == "1"
    assert "custom_key" not in settings["global"]
    assert settings["secure"]["user_setup_complete"] == "1"
    assert settings["global"]["device_provisioned"] == "1"
    assert settings["global"]["adb_enabled"] == "1"
    assert phone.adb_enabled()
    assert phone.is_key_authorised(KEY)
    assert make("samsung-frp").is_key_authorised(KEY)  # still on disk too
    assert "Accounts: 0" in (await phone.shell("dumpsys account")).stdout.decode()


async def test_power_cycle_handler_runs_after_the_reply(make: Maker) -> None:
    phone = make("pixel8-clean")
    events: list[str] = []

    async def handler() -> None:
        events.append("handler")
        await phone.finish_power_cycle()
        events.append("booted")

    phone.set_power_cycle_handler(handler)
    result = await phone.shell("cmd testharness enable")
    events.append("replied")
    assert result.exit_code == 0
    assert events == ["replied"]  # the reply is out before the phone goes down
    assert phone.user_files()  # nothing wiped yet
    await phone.wait_power_cycles()
    assert events == ["replied", "handler", "booted"]
    assert phone.user_files() == {}
    assert phone.online


async def test_finish_power_cycle_sleeps_the_reboot_time(make: Maker) -> None:
    phone = make("pixel8-clean")  # reboot_seconds = 45
    loop = asyncio.get_running_loop()
    start = loop.time()
    await phone.shell("reboot")
    await phone.wait_power_cycles()
    assert loop.time() - start >= FAST.real_seconds(45)


# --- reboot and manual reset -------------------------------------------------------------------


async def test_reboot_keeps_user_data(make: Maker) -> None:
    phone = make("pixel8-clean")
    await phone.shell("setprop debug.volatile 1; setprop persist.debug.kept 1")
    files = phone.user_files()
    await phone.request_reboot("")
    await phone.wait_power_cycles()
    assert phone.counters.history == ["reboot"]
    assert phone.user_files() == files
    assert phone.third_party_packages() == ["com.spotify.music"]
    props = phone.properties()
    assert "debug.volatile" not in props and props["persist.debug.kept"] == "1"
    assert phone.settings["global"]["boot_count"] == "38"


async def test_manual_factory_reset_forgets_keys_and_disables_adb(
    tmp_path: Path, make: Maker
) -> None:
    phone = make("android9")
    assert await phone.ask_user_to_authorise(KEY)
    await phone.perform_manual_factory_reset()
    assert phone.counters.history == ["factory_reset"]
    assert phone.account_list() == [] and phone.third_party_packages() == []
    assert phone.user_files() == {}
    assert not phone.is_key_authorised(KEY)
    assert not (tmp_path / phone.serial / "adb_keys").exists()
    assert not phone.adb_enabled()
    assert phone.settings["secure"]["user_setup_complete"] == "0"
    assert phone.settings["global"]["device_provisioned"] == "0"
    assert phone.settings["global"]["boot_count"] == "1"
    assert "persist.sys.test_harness" not in phone.properties()
    assert await phone.ask_user_to_authorise(KEY) is False  # ADB is off: no dialog
    phone.enable_usb_debugging()
    assert phone.adb_enabled()
    assert phone.settings["secure"]["user_setup_complete"] == "1"
    assert not phone.is_key_authorised(KEY)
    assert await phone.ask_user_to_authorise(KEY) is True


async def test_android_id_changes_with_a_reset(make: Maker) -> None:
    phone = make("pixel8-clean")
    before = phone.settings["secure"]["android_id"]
    await phone.perform_manual_factory_reset()
    assert phone.settings["secure"]["android_id"] != before
    assert phone.serial == "38211FDH2004NJ"


def test_unplug_and_plug(make: Maker) -> None:
    phone = make("pixel8-clean")
    phone.unplug()
    assert not phone.adb_enabled()
    phone.plug()
    assert phone.adb_enabled()


# --- sync service and faults ---------------------------------------------------------------------


def test_sync_file_access_rules(make: Maker) -> None:
    phone = make("pixel8-clean")
    assert phone.write_file("/sdcard/Download/new/a.bin", b"abc", 0o100644, 1_700_000_123) is None
    assert phone.read_file("/sdcard/Download/new/a.bin") == b"abc"
    st = phone.stat("/storage/emulated/0/Download/new/a.bin")
    assert st is not None and (st.size, st.mtime) == (3, 1_700_000_123)
    assert st.mode & 0o170000 == 0o100000
    assert phone.write_file("/data/local/tmp/t", b"x", 0o100755, 1) is None
    assert phone.stat("/data/local/tmp/t") is not None
    assert phone.write_file("/system/t", b"x", 0o100644, 1) == (
        "couldn't create file: Read-only file system"
    )
    assert (
        phone.write_file("/data/t", b"x", 0o100644, 1) == "couldn't create file: Permission denied"
    )
    data_stat = phone.stat("/data")
    assert data_stat is not None and data_stat.mode & 0o170000 == 0o040000
    assert phone.listdir("/data") is None
    assert phone.read_file("/data/system/locksettings.db") is None
    names = [name for name, _ in phone.listdir("/sdcard") or []]
    assert "DCIM" in names
    assert phone.read_file("/sdcard/DCIM") is None


def test_protocol_fault_prefix_matching(make: Maker) -> None:
    hang = make("bad-hang")
    assert hang.protocol_fault("shell:dumpsys battery") == "hang"
    assert hang.protocol_fault("shell,v2,raw:dumpsys battery") == "hang"
    assert hang.protocol_fault("shell:getprop") is None
    assert hang.protocol_fault("sync:") is None
    assert make("bad-checksum").protocol_fault("shell:getprop ro.serialno") == "wrong_checksum"
    assert make("bad-disconnect").protocol_fault("shell:getprop") == "disconnect"
    assert make("bad-oversized").protocol_fault("shell:getprop") == "oversized_payload"
    assert make("bad-malformed").protocol_fault("shell:getprop") == "malformed_packet"
    assert make("pixel8-clean").protocol_fault("shell:getprop") is None


async def test_automatic_prompt_can_be_answered_early(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, ("accept_after = 4", "accept_after = 3000"))
    phone = load_profile(path, state_dir=tmp_path, clock=FAST)  # 3 real seconds
    waiting = asyncio.create_task(phone.ask_user_to_authorise(KEY))
    await asyncio.sleep(0.01)
    assert phone.pending_authorisations() == 1
    assert phone.refuse_pending_authorisation() is True
    assert await FAST.wait_for(waiting, 100) is False
    assert not phone.is_key_authorised(KEY)
    waiting = asyncio.create_task(phone.ask_user_to_authorise(KEY))
    await asyncio.sleep(0.01)
    assert phone.accept_pending_authorisation() is True
    assert await FAST.wait_for(waiting, 100) is True
