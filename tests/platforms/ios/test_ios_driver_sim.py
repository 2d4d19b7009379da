"""IosDriver against simulated iPhones (real pymobiledevice3, fake usbmuxd + lockdownd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wipeagent.clock import Clock
from wipeagent.errors import DeviceError, DeviceTimeout
from wipeagent.models import ErasePlan
from wipeagent.outcome import decide
from wipeagent.platforms.base import ErasePolicy
from wipeagent.platforms.ios import IosDriver
from wipeagent.transports.ios import IosSettings, UsbmuxAddress
from wipeagent_sim.ios import SimIosBench

SETTINGS = IosSettings(pair_timeout_s=30, command_timeout_s=20, poll_interval_s=1,
                       reboot_timeout_s=400)


def driver_for(bench: SimIosBench, tmp_path: Path, settings: IosSettings = SETTINGS
               ) -> IosDriver:
    return IosDriver(bench.phones[0].udid, UsbmuxAddress.parse(bench.address),
                     tmp_path / "records", bench.clock, settings)


async def test_old_ios_erase_end_to_end(tmp_path: Path) -> None:
    # iOS 12, TLS 1.2 only: the same flow, mobilebackup2 EraseDevice.
    async with SimIosBench(["old_ios"], clock=Clock(100)) as bench:
        driver = driver_for(bench, tmp_path)
        try:
            ident = await driver.identify()
            assert (ident.marketing_name, ident.os_version) == ("iPhone 6", "12.5.7")
            diag = await driver.diagnose(ident)
            assert {c.id: c.status.value for c in diag}["ios.battery"] == "warn"  # 77 %
            _, plan = driver.plan_erase(ident, diag, ErasePolicy())
            assert isinstance(plan, ErasePlan)
            canary = await driver.plant_canary()
            assert canary.files == () and canary.settings["ios.host_id"]
            await driver.start_erase(plan)
            back = await driver.await_return(ident, plan)
            assert back.serial == ident.serial
            verification = await driver.verify(ident, plan, canary)
            assert bench.phones[0].erase_count == 1
            assert decide(plan, verification).outcome.value == "erased"
        finally:
            await driver.close()


async def test_a_reboot_is_not_an_erase(tmp_path: Path) -> None:
    async with SimIosBench(["clean"], clock=Clock(100)) as bench:
        driver = driver_for(bench, tmp_path)
        try:
            ident = await driver.identify()
            _, plan = driver.plan_erase(ident, await driver.diagnose(ident), ErasePolicy())
            assert isinstance(plan, ErasePlan)
            canary = await driver.plant_canary()
            bench.phones[0].start_reboot()  # the phone restarts, nothing is erased
            await driver.await_return(ident, plan)
            verification = await driver.verify(ident, plan, canary)
            status = {c.id: c.status.value for c in verification}
            assert status["ios.verify.old_pairing"] == "fail"
            assert status["ios.verify.identity_key"] == "fail"
            assert status["ios.verify.unactivated"] == "fail"
            assert decide(plan, verification).outcome.value == "not_erased"
        finally:
            await driver.close()


async def test_refused_erase_and_a_phone_that_never_returns(tmp_path: Path) -> None:
    refuses = tmp_path / "refuses.toml"
    refuses.write_text('name = "refuses"\n[trust]\nauto_accept_after = 1.0\n[erase]\n'
                       'mobilebackup2_error = 205\nmobilebackup2_error_description = '
                       '"Erase refused"\n', encoding="utf-8")
    async with SimIosBench([refuses], clock=Clock(100)) as bench:
        driver = driver_for(bench, tmp_path)
        try:
            ident = await driver.identify()
            _, plan = driver.plan_erase(ident, await driver.diagnose(ident), ErasePolicy())
            assert isinstance(plan, ErasePlan)
            with pytest.raises(DeviceError, match="refused mobilebackup2 EraseDevice"):
                await driver.start_erase(plan)
            assert bench.phones[0].erase_count == 0
            # Unplugged for good after "starting" the erase: a bounded wait, then timeout.
            bench.unplug(bench.phones[0].udid)
            short = plan.model_copy(update={"return_timeout_s": 60})
            with pytest.raises(DeviceTimeout, match="did not restart"):
                await driver.await_return(ident, short)
        finally:
            await driver.close()


async def test_resumed_verify_tests_the_pre_erase_pairing(tmp_path: Path) -> None:
    # The agent restarted between the phone's return and verify: the new driver asks the
    # phone about the pairing journaled before the erase (its HostID), not about the one
    # made after it, and reaches the same verdict an uninterrupted session would.
    async with SimIosBench(["clean"], clock=Clock(100)) as bench:
        first = driver_for(bench, tmp_path)
        ident = await first.identify()
        _, plan = first.plan_erase(ident, await first.diagnose(ident), ErasePolicy())
        assert isinstance(plan, ErasePlan)
        canary = await first.plant_canary()
        await first.start_erase(plan)
        await first.await_return(ident, plan)  # pairs again, with a HostID of its own
        await first.close()
        second = driver_for(bench, tmp_path)
        try:
            verification = await second.verify(ident, plan, canary)
            assert second._conn is not None
            assert second._conn.host_id != canary.settings["ios.host_id"]
        finally:
            await second.close()
        status = {c.id: c.status.value for c in verification}
        assert status["ios.verify.old_pairing"] == "pass"
        assert status["ios.verify.identity_key"] == "pass"
        assert status["ios.verify.restarted"] == "pass"
        assert status["ios.verify.storage"] == "pass"
        assert decide(plan, verification).outcome.value == "erased"
