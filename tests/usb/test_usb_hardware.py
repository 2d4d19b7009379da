"""On a real bench: the phone the technician plugged in is found (needs hardware)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wipeagent.clock import REAL_TIME
from wipeagent.usb import PhoneKind, UsbWatcher

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(os.environ.get("WIPEAGENT_HARDWARE") != "1", reason="needs a real phone"),
]


def test_real_phone_is_found() -> None:
    """Plug one phone in and set WIPEAGENT_TEST_SERIAL to its serial (adb devices / UDID)."""
    serial = os.environ["WIPEAGENT_TEST_SERIAL"]
    phones = UsbWatcher(REAL_TIME).snapshot()
    match = [p for p in phones if p.serial and p.serial.replace("-", "") == serial.replace("-", "")]
    assert len(match) == 1, phones
    assert match[0].kind in set(PhoneKind)


async def test_adb_over_usb_on_a_real_phone(tmp_path: Path) -> None:
    """A real Android phone with USB debugging on, no adb server running, and this bench's
    key allowed (tap Allow when asked): connect by serial over libusb, run a command,
    identify it with the real driver."""
    from wipeagent.platforms.android.driver import AndroidDriver
    from wipeagent.transports.adb import AdbHostKey, AdbUsbEndpoint, connect_adb

    serial = os.environ["WIPEAGENT_TEST_SERIAL"]
    key = AdbHostKey.load_or_create(Path(os.environ.get("WIPEAGENT_ADB_KEY", tmp_path / "adbkey")))
    conn = await connect_adb(AdbUsbEndpoint(serial), key, REAL_TIME, auth_timeout_s=60)
    try:
        out = await conn.shell("echo wipeagent-usb-ok")
        assert out.stdout.strip() == b"wipeagent-usb-ok"
    finally:
        await conn.close()
    driver = AndroidDriver(AdbUsbEndpoint(serial), key, REAL_TIME)  # type: ignore[arg-type]
    try:
        identity = await driver.identify()
        assert identity.serial == serial
    finally:
        await driver.close()
