"""On a real bench: the phone the technician plugged in is found (needs hardware)."""

from __future__ import annotations

import os

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
