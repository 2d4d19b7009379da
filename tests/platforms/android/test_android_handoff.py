"""Test Harness Mode as AOSP applies it on the simulated phone, and the hand-off that puts
each setting back (read back on the phone) and turns USB debugging off last."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from android_sim import Sim
from test_android_driver_sim import full_run

from wipeagent.models import ErasePlan, HandoffItem, HandoffResult
from wipeagent.platforms.android.erase import METHOD_MANUAL, METHOD_TESTHARNESS
from wipeagent_sim.android.profiles import PROFILE_DIR

SimFactory = Callable[[str | Path], AbstractAsyncContextManager[Sim]]


def by_id(items: list[HandoffItem]) -> dict[str, HandoffItem]:
    return {i.id: i for i in items}


# Profile -> (API level, the package verifier key Test Harness Mode writes, stay-awake).
THM_VERSIONS = {
    "unencrypted": (29, "package_verifier_enable", "7"),
    "rooted": (31, "verifier_verify_adb_installs", "7"),
    "pixel8-clean": (34, "verifier_verify_adb_installs", "15"),
}


@pytest.mark.parametrize("profile", sorted(THM_VERSIONS))
async def test_test_harness_mode_applies_what_aosp_applies(sim_factory: SimFactory,
                                                           profile: str) -> None:
    sdk, verifier, stay_on = THM_VERSIONS[profile]
    async with sim_factory(profile) as sim:
        assert sim.phone.sdk == sdk
        await sim.driver.identify()  # the bench's key is authorised now
        keys_before = sim.phone.authorised_keys()
        await sim.phone.request_testharness_reset()
        await sim.phone.wait_power_cycles()
        glob, secure = sim.phone.settings["global"], sim.phone.settings["secure"]
        assert glob[verifier] == "0"
        other = ({"package_verifier_enable", "verifier_verify_adb_installs"} - {verifier}).pop()
        assert other not in glob
        assert glob["stay_on_while_plugged_in"] == stay_on
        assert glob["ota_disable_automatic_update"] == "1"
        assert glob["adb_allowed_connection_time"] == "0"
        assert glob["adb_enabled"] == "1" and glob["development_settings_enabled"] == "1"
        assert glob["device_provisioned"] == "1" and secure["user_setup_complete"] == "1"
        assert secure["location_mode"] == "3"
        assert sim.phone.lock_screen == "none"  # setLockScreenDisabled(true)
        assert sim.phone.master_sync is False
        assert sim.phone.properties()["persist.sys.test_harness"] == "1"
        assert sim.phone.authorised_keys() == keys_before and keys_before


async def test_a_normal_reset_clears_the_keys(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        await sim.driver.identify()
        assert sim.phone.authorised_keys()
        await sim.driver.close()
        await sim.phone.perform_manual_factory_reset()
        assert sim.phone.authorised_keys() == []
        assert not sim.phone.adb_enabled() and not sim.phone.setup_complete
        assert "persist.sys.test_harness" not in sim.phone.properties()
        assert not await sim.driver.reachable_with_bench_key(20)


async def erase_and_hand_off(sim: Sim) -> tuple[ErasePlan, list[HandoffItem]]:
    _, plan, _ = await full_run(sim)
    assert isinstance(plan, ErasePlan)
    items = await sim.driver.hand_off(plan)
    # Every value is read back before USB debugging goes off: the phone still answers.
    assert sim.phone.adb_enabled()
    last = await sim.driver.finish_hand_off()
    assert last is not None
    return plan, [*items, last]


async def test_hand_off_restores_every_setting_on_android_14(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        plan, items = await erase_and_hand_off(sim)
        assert plan.method_id == METHOD_TESTHARNESS
        got = by_id(items)
        glob, secure = sim.phone.settings["global"], sim.phone.settings["secure"]
        # On the phone itself:
        assert "verifier_verify_adb_installs" not in glob
        assert "ota_disable_automatic_update" not in glob
        assert "adb_allowed_connection_time" not in glob
        assert glob["stay_on_while_plugged_in"] == "0"
        assert glob["development_settings_enabled"] == "0"
        assert glob["adb_enabled"] == "0" and not sim.phone.adb_enabled()
        assert secure["location_mode"] == "0"
        assert sim.phone.lock_screen == "swipe"
        # What cannot be put back stays, and is said so:
        assert sim.phone.properties()["persist.sys.test_harness"] == "1"
        assert sim.phone.authorised_keys()
        # The record says the same, with the values read from the phone:
        for item_id in ("package_verifier", "automatic_updates", "stay_awake",
                        "adb_key_expiry", "location", "developer_options", "lock_screen",
                        "usb_debugging"):
            assert got[item_id].result is HandoffResult.RESTORED, got[item_id]
        assert (got["stay_awake"].before, got["stay_awake"].after) == ("15", "0")
        assert got["package_verifier"].before == "0" and got["package_verifier"].after is None
        for item_id in ("test_harness_mode", "setup_wizard", "auto_sync", "bench_key"):
            assert got[item_id].result is HandoffResult.NOT_RESTORABLE
        assert items[-1].id == "usb_debugging"  # last
        assert not await sim.driver.reachable_with_bench_key(20)


async def test_hand_off_on_android_10_uses_its_keys(sim_factory: SimFactory) -> None:
    async with sim_factory("unencrypted") as sim:
        _, items = await erase_and_hand_off(sim)
        got = by_id(items)
        assert "package_verifier_enable" not in sim.phone.settings["global"]
        assert "package_verifier_enable" in got["package_verifier"].method
        assert "settings put secure location_mode 0" in got["location"].method
        assert (got["stay_awake"].before, got["stay_awake"].result) == \
            ("7", HandoffResult.RESTORED)
        assert not sim.phone.adb_enabled()


async def test_hand_off_after_a_guided_manual_reset(sim_factory: SimFactory) -> None:
    async with sim_factory("android9") as sim:
        plan, items = await erase_and_hand_off(sim)
        assert plan.method_id == METHOD_MANUAL
        got = by_id(items)
        assert got["developer_options"].result is HandoffResult.RESTORED
        assert got["usb_debugging"].result is HandoffResult.RESTORED
        assert got["test_harness_mode"].result is HandoffResult.UNCHANGED
        assert "auto_sync" not in got  # only Test Harness Mode turns it off
        assert got["stay_awake"].result is HandoffResult.UNCHANGED
        assert not sim.phone.adb_enabled()


def _variant(tmp_path: Path, quirks: str) -> Path:
    text = (PROFILE_DIR / "pixel8-clean.toml").read_text() + "\n[quirks]\n" + quirks
    path = tmp_path / "quirky.toml"
    path.write_text(text)
    return path


async def test_a_setting_that_does_not_stick_fails(sim_factory: SimFactory,
                                                   tmp_path: Path) -> None:
    path = _variant(tmp_path, 'frozen_settings = ["stay_on_while_plugged_in"]\n')
    async with sim_factory(path) as sim:
        _, items = await erase_and_hand_off(sim)
        stay = by_id(items)["stay_awake"]
        assert stay.result is HandoffResult.FAILED and stay.after == "15"
        assert "expected 0" in stay.detail


async def test_adbd_that_keeps_running_fails_the_last_step(sim_factory: SimFactory,
                                                            tmp_path: Path) -> None:
    async with sim_factory(_variant(tmp_path, "adb_stays_on = true\n")) as sim:
        _, items = await erase_and_hand_off(sim)
        usb = by_id(items)["usb_debugging"]
        assert usb.result is HandoffResult.FAILED
        assert "still answers" in usb.detail
