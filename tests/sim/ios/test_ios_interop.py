"""libimobiledevice's own tools (Debian's ideviceinfo / idevicediagnostics) against the sim."""

from __future__ import annotations

import asyncio
import os
import plistlib
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymobiledevice3.lockdown import UsbmuxLockdownClient

from wipeagent.clock import Clock
from wipeagent_sim.ios import SimIosBench
from wipeagent_sim.ios.profile import Trust

Connect = Callable[..., Awaitable[UsbmuxLockdownClient]]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("ideviceinfo") is None or shutil.which("idevicediagnostics") is None,
        reason="libimobiledevice-utils not installed",
    ),
]


async def run_tool(address: str, home: Path, *argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "USBMUXD_SOCKET_ADDRESS": address, "HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def test_ideviceinfo_simple_mode_without_pairing(bench: SimIosBench, tmp_path: Path) -> None:
    phone = bench.phones[0]
    rc, out, err = await run_tool(bench.address, tmp_path, "ideviceinfo", "-s", "-u", phone.udid)
    assert rc == 0, err
    assert f"UniqueDeviceID: {phone.udid}" in out
    assert "ProductVersion: 17.5.1" in out
    assert "SerialNumber" not in out


async def test_ideviceinfo_and_diagnostics_after_pairing(
    bench: SimIosBench, pair: Connect, tmp_path: Path
) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)  # pymobiledevice3 pairs and saves the record in usbmuxd
    await client.close()
    rc, out, err = await run_tool(bench.address, tmp_path, "ideviceinfo", "-u", phone.udid)
    assert rc == 0, err
    assert f"SerialNumber: {phone.serial_number}" in out
    assert "ActivationState: Activated" in out
    rc, out, err = await run_tool(
        bench.address, tmp_path, "ideviceinfo", "-u", phone.udid, "-q", "com.apple.fmip", "-x"
    )
    assert rc == 0, err
    assert plistlib.loads(out.encode()) == {"IsAssociated": False}
    rc, out, err = await run_tool(
        bench.address,
        tmp_path,
        "idevicediagnostics",
        "-u",
        phone.udid,
        "ioregentry",
        "AppleARMPMUCharger",
    )
    assert rc == 0, err
    battery = plistlib.loads(out.encode())["IORegistry"]
    assert battery["CycleCount"] == 212 and battery["DesignCapacity"] == 2815


async def test_libusbmuxd_over_unix_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = str(tmp_path / "usbmuxd")
    async with SimIosBench(["worn_battery"], clock=Clock(300), socket_path=sock) as bench:
        udid = bench.phones[0].udid
        rc, out, err = await run_tool(f"UNIX:{sock}", tmp_path, "ideviceinfo", "-s", "-u", udid)
        assert rc == 0, err
        assert f"UniqueDeviceID: {udid}" in out


async def test_ideviceinfo_without_pair_record_fails_cleanly(
    bench: SimIosBench, tmp_path: Path
) -> None:
    # No record anywhere and the person has not tapped Trust: the tool must give up, not hang.
    phone = bench.phones[0]
    phone.profile = phone.profile.model_copy(update={"trust": Trust(auto_accept=False)})
    rc, out, _err = await run_tool(
        bench.address, tmp_path, "ideviceinfo", "-u", phone.udid, "-k", "SerialNumber"
    )
    assert rc != 0
    assert phone.serial_number not in out
    assert phone.pairings == {}


async def test_idevicepair_then_pymobiledevice3_uses_its_record(
    bench: SimIosBench, connect: Connect, tmp_path: Path
) -> None:
    phone = bench.phones[0]
    rc, out, _ = await run_tool(bench.address, tmp_path, "idevicepair", "-u", phone.udid, "pair")
    assert rc != 0 and "trust dialog" in out  # prompt now showing
    bench.trust(phone.udid)
    rc, out, err = await run_tool(bench.address, tmp_path, "idevicepair", "-u", phone.udid, "pair")
    assert rc == 0, out + err
    assert len(phone.pairings) == 1
    # The record libimobiledevice saved in usbmuxd works for pymobiledevice3 too.
    client = await connect(phone.udid)
    try:
        assert client.paired
        assert client.all_values["SerialNumber"] == phone.serial_number
    finally:
        await client.close()
