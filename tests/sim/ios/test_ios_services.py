"""Services behind lockdown, through pymobiledevice3's own service clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import InvalidServiceError, ProfileError, PyMobileDevice3Exception
from pymobiledevice3.lockdown import UsbmuxLockdownClient
from pymobiledevice3.services.diagnostics import DiagnosticsService
from pymobiledevice3.services.mobile_config import MobileConfigService
from pymobiledevice3.services.mobilebackup2 import Mobilebackup2Service

from wipeagent_sim.ios import SimIosBench

Connect = Callable[..., Awaitable[UsbmuxLockdownClient]]


@pytest.mark.parametrize("bench", [["worn_battery"]], indirect=True)
async def test_diagnostics_battery(bench: SimIosBench, pair: Connect) -> None:
    client = await pair(bench.phones[0].udid)
    try:
        async with DiagnosticsService(client) as diag:
            battery = await diag.get_battery()
            assert battery is not None
            assert battery["CycleCount"] == 1150
            assert battery["DesignCapacity"] == 3110
            assert battery["NominalChargeCapacity"] == 2208
            # The same entry by name, as idevicediagnostics asks for it.
            assert (await diag.ioregistry(name="AppleARMPMUCharger"))["CycleCount"] == 1150
            with pytest.raises(PyMobileDevice3Exception):
                await diag.ioregistry(name="NoSuchEntry")
    finally:
        await client.close()


async def test_unknown_service_is_refused(bench: SimIosBench, pair: Connect) -> None:
    client = await pair(bench.phones[0].udid)
    try:
        with pytest.raises(InvalidServiceError):
            await client.start_lockdown_service("com.apple.afc.not-here")
    finally:
        await client.close()


async def test_service_port_accepts_one_connection_only(bench: SimIosBench, pair: Connect) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    try:
        attrs = await client.get_service_connection_attributes("com.apple.mobile.diagnostics_relay")
        assert attrs["EnableServiceSSL"] is True
        assert phone.accept(attrs["Port"]) is not None
        assert phone.accept(attrs["Port"]) is None  # already taken
    finally:
        await client.close()


@pytest.mark.parametrize("bench", [["supervised_mdm", "clean"]], indirect=True)
async def test_mcinstall_cloud_configuration_and_erase_rules(
    bench: SimIosBench, pair: Connect
) -> None:
    supervised, clean = bench.phones
    client = await pair(supervised.udid)
    try:
        async with MobileConfigService(client) as mc:
            config = await mc.get_cloud_configuration()
            assert config is not None
            assert config["IsSupervised"] is True
            assert config["OrganizationName"] == "ACME Corp"
    finally:
        await client.close()
    other = await pair(clean.udid)
    try:
        async with MobileConfigService(other) as mc:
            assert (await mc.get_cloud_configuration())["IsSupervised"] is False  # type: ignore[index]
            with pytest.raises(ProfileError):
                await mc.erase_device(preserve_data_plan=False, disallow_proximity_setup=False)
        assert not clean.busy and clean.erase_count == 0
    finally:
        await other.close()


async def _wait_reattached(bench: SimIosBench, udid: str, old_id: int | None) -> int:
    """Watch usbmuxd like a client would: the phone leaves, then comes back."""
    async with bench.clock.timeout(6000):
        while True:
            devices = await usbmux.list_devices(usbmux_address=bench.address)
            ids = [d.devid for d in devices if d.serial == udid]
            if ids and ids[0] != old_id:
                return ids[0]
            await asyncio.sleep(0.02)


async def test_mobilebackup2_erase(
    bench: SimIosBench, connect: Connect, pair: Connect, tmp_path: Path
) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    old_id = bench.usbmuxd.device_id(phone.udid)
    old_key = phone.default_domain()["DevicePublicKey"]
    try:
        async with Mobilebackup2Service(client) as backup:
            await backup.erase_device(tmp_path)
    finally:
        await client.close()
    new_id = await _wait_reattached(bench, phone.udid, old_id)
    assert new_id != old_id
    assert phone.erase_count == 1
    # The phone forgot the pairing: the host's record (still in usbmuxd) no longer works.
    again = await connect(phone.udid)
    try:
        assert not again.paired
        assert again.all_values["DeviceName"] == "iPhone"
        assert await again.get_value(key="DevicePublicKey") != old_key
    finally:
        await again.close()
    fresh = await pair(phone.udid)
    try:
        assert fresh.all_values["ActivationState"] == "Unactivated"
        usage = await fresh.get_value("com.apple.disk_usage")
        assert usage["AmountDataAvailable"] == usage["TotalDataCapacity"]
    finally:
        await fresh.close()


@pytest.mark.parametrize("bench", [["supervised_mdm"]], indirect=True)
async def test_mcinstall_erase_on_supervised_phone(bench: SimIosBench, pair: Connect) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    old_id = bench.usbmuxd.device_id(phone.udid)
    try:
        async with MobileConfigService(client) as mc:
            await mc.erase_device(preserve_data_plan=False, disallow_proximity_setup=True)
    finally:
        await client.close()
    await _wait_reattached(bench, phone.udid, old_id)
    assert phone.erase_count == 1 and phone.pairings == {}
    assert phone.state.activation_state == "Unactivated"


@pytest.mark.parametrize("bench", [["findmy_on"]], indirect=True)
async def test_find_my_survives_erase(bench: SimIosBench, pair: Connect, tmp_path: Path) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    old_id = bench.usbmuxd.device_id(phone.udid)
    try:
        assert await client.get_value("com.apple.fmip", "IsAssociated") is True
        async with Mobilebackup2Service(client) as backup:
            await backup.erase_device(tmp_path)
    finally:
        await client.close()
    await _wait_reattached(bench, phone.udid, old_id)
    client = await pair(phone.udid)
    try:
        assert client.all_values["ActivationState"] == "Unactivated"
        assert await client.get_value("com.apple.fmip", "IsAssociated") is True
    finally:
        await client.close()


async def test_diagnostics_restart_keeps_pairing(
    bench: SimIosBench, connect: Connect, pair: Connect
) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    old_id = bench.usbmuxd.device_id(phone.udid)
    try:
        async with DiagnosticsService(client) as diag:
            await diag.restart()
    finally:
        await client.close()
    await _wait_reattached(bench, phone.udid, old_id)
    again = await connect(phone.udid)
    try:
        assert again.paired  # a reboot does not forget the host
        assert phone.erase_count == 0
    finally:
        await again.close()
