"""Classification rules, slots, the data file, and the adb / usbmuxd checks (no umockdev)."""

from __future__ import annotations

import asyncio
import os
import plistlib
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError
from wipeagent.usb import PhoneKind, SlotMap, UsbInterface, UsbPhone, classify, find_usbfs_holders
from wipeagent.usb.classify import RawUsbDevice, clean_serial, clean_text
from wipeagent.usb.conflicts import check_usbmuxd, tcp_listening, usbmuxd_address
from wipeagent.usb.ids import load_ids, parse_ids

FAST = Clock(50.0)


def intf(triple: tuple[int, int, int], name: str = "", number: int = 0) -> UsbInterface:
    return UsbInterface(
        number=number, cls=triple[0], subclass=triple[1], protocol=triple[2], name=name
    )


def raw(vid: int, pid: int, *intfs: UsbInterface, serial: bytes | None = b"SER1") -> RawUsbDevice:
    return RawUsbDevice(
        port_path="1-2",
        busnum=1,
        devnum=7,
        vendor_id=vid,
        product_id=pid,
        serial=serial,
        interfaces=intfs,
    )


SLOTS = SlotMap({"1-2": "A1"})


@pytest.mark.parametrize(
    ("device", "kind"),
    [
        (raw(0x18D1, 0x4EE7, intf((0xFF, 0x42, 0x01))), PhoneKind.ANDROID_ADB),
        (raw(0x1234, 0x0001, intf((0xFF, 0x42, 0x01))), PhoneKind.ANDROID_ADB),  # any vendor
        (raw(0x18D1, 0x4EE0, intf((0xFF, 0x42, 0x03))), PhoneKind.ANDROID_FASTBOOT),
        (raw(0x18D1, 0x4EE1, intf((0x06, 0x01, 0x01), "MTP")), PhoneKind.ANDROID_NO_ADB),
        (
            raw(0x2717, 0xFF40, intf((0x06, 0x01, 0x01))),
            PhoneKind.ANDROID_NO_ADB,
        ),  # PTP, phone maker
        (raw(0x9999, 0x0001, intf((0xFF, 0xFF, 0x00), "MTP")), PhoneKind.ANDROID_NO_ADB),
        (
            raw(0x05AC, 0x12A8, intf((0x06, 0x01, 0x01)), intf((0xFF, 0xFE, 0x02), number=1)),
            PhoneKind.IOS,
        ),
        (raw(0x05AC, 0x12A8, intf((0x06, 0x01, 0x01))), PhoneKind.IOS_NO_USBMUX),
        (raw(0x05AC, 0x1281, intf((0xFF, 0xFF, 0x00))), PhoneKind.APPLE_RECOVERY),
        (raw(0x05AC, 0x1227, intf((0xFE, 0x01, 0x00))), PhoneKind.APPLE_DFU),
        (raw(0x05AC, 0x024F, intf((0x03, 0x01, 0x01))), None),  # Apple keyboard
        (raw(0x04A9, 0x3218, intf((0x06, 0x01, 0x01))), None),  # camera: PTP, not a phone maker
        (raw(0x04E8, 0x61F5, intf((0x08, 0x06, 0x50))), None),  # Samsung SSD
        (raw(0x05E3, 0x0610, intf((0x09, 0x00, 0x00))), None),  # hub
        (raw(0x18D1, 0x4EE7), None),  # nothing known about its interfaces
    ],
)
def test_classification(device: RawUsbDevice, kind: PhoneKind | None) -> None:
    phone = classify(device, SLOTS)
    assert (phone.kind if phone else None) == kind


def test_fastboot_wins_over_adb_and_phone_fields() -> None:
    phone = classify(
        raw(0x18D1, 0x4EE0, intf((0xFF, 0x42, 0x03)), intf((0xFF, 0x42, 0x01), number=1)), SLOTS
    )
    assert phone is not None and phone.kind is PhoneKind.ANDROID_FASTBOOT
    assert phone.slot == "A1" and phone.vid_pid == "18d1:4ee0" and phone.platform == "android"
    assert phone.devnode == "/dev/bus/usb/001/007"
    assert phone.identity == "SER1"


def test_hostile_strings_are_bounded_and_stripped() -> None:
    evil = b"ABC;rm -rf /$(x)`\x1b[31m" + b"A" * 5000
    assert clean_serial(evil) is None  # not a serial; never used as one
    assert clean_serial(b"R58M12345") == "R58M12345"
    text = clean_text(evil)
    assert len(text) <= 64
    assert not set(text) & set(";$`\x1b<>\"'")
    device = RawUsbDevice(
        port_path="1-2",
        busnum=1,
        devnum=7,
        vendor_id=0x18D1,
        product_id=0x4EE7,
        serial=evil,
        product=evil,
        manufacturer=b"\xff\xfe",
        interfaces=(intf((0xFF, 0x42, 0x01)),),
    )
    phone = classify(device, SLOTS)
    assert phone is not None and phone.serial is None and phone.identity is None
    assert len(phone.usb_product) <= 64


def test_apple_recovery_serial_yields_ecid_only() -> None:
    serial = b"CPID:8101 CPRV:11 ECID:000A1B2C3D4E5F60 IBFL:3C SRTG:[iBoot-7459.140.15]"
    phone = classify(raw(0x05AC, 0x1227, serial=serial), SLOTS)
    assert phone is not None and phone.serial is None
    assert phone.ecid == "000A1B2C3D4E5F60" and phone.identity == "ecid:000A1B2C3D4E5F60"


def test_slot_map_validation_and_twin_ports() -> None:
    slots = SlotMap({"1-3": "A3", "2-3": "A3"})  # USB 2 and USB 3 paths of one connector
    assert slots.label("2-3") == "A3" and slots.ports("A3") == ["1-3", "2-3"]
    assert slots.label("3-1.4") == "usb-3-1.4"
    with pytest.raises(ConfigError):
        SlotMap({"../etc": "A1"})
    with pytest.raises(ConfigError):
        SlotMap({"1-1": "A1; rm -rf"})


def test_data_file_loads_and_bad_data_is_rejected() -> None:
    ids = load_ids()
    assert ids.vendor_name(0x18D1) == "Google"
    assert ids.is_phone_maker(0x04E8) and not ids.is_phone_maker(0x04A9)
    assert 0x1281 in ids.apple_recovery and 0x1227 in ids.apple_dfu
    with pytest.raises(ConfigError):
        parse_ids('[vendors]\n"18d" = { name = "x" }\n')
    with pytest.raises(ConfigError):
        parse_ids('[products]\n"18d1" = "no product id"\n')
    with pytest.raises(ConfigError):
        parse_ids("[apple]\nrecovery_product_ids = ['x']\n")


def test_usb_phone_round_trips_through_json() -> None:
    phone = classify(raw(0x18D1, 0x4EE7, intf((0xFF, 0x42, 0x01))), SLOTS)
    assert phone is not None
    assert UsbPhone.model_validate_json(phone.model_dump_json()) == phone


def test_find_usbfs_holders_names_a_process_called_adb(tmp_path: Path) -> None:
    node = tmp_path / "005"
    node.write_bytes(b"")
    code = (
        "import sys,time;open('/proc/self/comm','w').write('adb');"
        "f=open(sys.argv[1]);print('ready',flush=True);time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(node)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        holders, _ = find_usbfs_holders(str(node))
        assert [(h.pid, h.name) for h in holders] == [(child.pid, "adb")]
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while find_usbfs_holders(str(node))[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert find_usbfs_holders(str(node))[0] == []


async def test_tcp_listening_detects_a_listener() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await tcp_listening(FAST, "127.0.0.1", port)
    server.close()
    await server.wait_closed()
    assert not await tcp_listening(FAST, "127.0.0.1", port)


def test_usbmuxd_address_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USBMUXD_SOCKET_ADDRESS", raising=False)
    assert usbmuxd_address() == "/var/run/usbmuxd"
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", "UNIX:/tmp/mux")
    assert usbmuxd_address() == "/tmp/mux"
    assert usbmuxd_address("127.0.0.1:27015") == "127.0.0.1:27015"


async def _fake_usbmuxd(path: str, udid: str, *, silent: bool = False) -> asyncio.Server:
    """Speaks usbmuxd's plist protocol (16-byte header + XML plist) for ReadBUID/ListDevices."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(16)
                length, _version, _message, tag = struct.unpack("<IIII", header)
                request = plistlib.loads(await reader.readexactly(length - 16))
                if silent:
                    continue
                if request["MessageType"] == "ReadBUID":
                    reply = {"BUID": "00000000-0000-0000-0000-000000000000"}
                else:
                    reply = {
                        "DeviceList": [
                            {
                                "MessageType": "Attached",
                                "DeviceID": 3,
                                "Properties": {"SerialNumber": udid, "ConnectionType": "USB"},
                            }
                        ]
                    }
                body = plistlib.dumps(reply)
                writer.write(struct.pack("<IIII", 16 + len(body), 1, 8, tag) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_unix_server(handle, path)


async def test_usbmuxd_check_answering_and_sees_phone(tmp_path: Path) -> None:
    path = str(tmp_path / "usbmuxd")
    server = await _fake_usbmuxd(path, "00008030-001A35E22EF8802E")
    try:
        check = await check_usbmuxd(FAST, path)
    finally:
        server.close()
        await server.wait_closed()
    assert check.socket_present and check.answering
    assert check.udids == ("00008030-001A35E22EF8802E",)
    iphone = classify(
        raw(0x05AC, 0x12A8, intf((0xFF, 0xFE, 0x02)), serial=b"00008030001A35E22EF8802E"), SLOTS
    )
    other = classify(raw(0x05AC, 0x12A8, intf((0xFF, 0xFE, 0x02)), serial=b"0000803000FF"), SLOTS)
    assert iphone is not None and other is not None
    assert check.sees(iphone) and not check.sees(other)


async def test_usbmuxd_check_missing_and_silent(tmp_path: Path) -> None:
    missing = await check_usbmuxd(FAST, str(tmp_path / "nothing"))
    assert missing.socket_present is False and not missing.answering
    assert "not running" in missing.detail
    plain_file = tmp_path / "not-a-socket"
    plain_file.write_text("")
    assert (await check_usbmuxd(FAST, str(plain_file))).socket_present is False
    path = str(tmp_path / "silent")
    server = await _fake_usbmuxd(path, "x", silent=True)
    try:
        silent = await check_usbmuxd(FAST, path, timeout_s=1.0)
    finally:
        server.close()
        await server.wait_closed()
    assert silent.socket_present and not silent.answering
    assert "in time" in silent.detail


def test_holders_skip_own_process(tmp_path: Path) -> None:
    node = tmp_path / "006"
    node.write_bytes(b"")
    with node.open():
        assert find_usbfs_holders(str(node))[0] == []
        mine = find_usbfs_holders(str(node), exclude_self=False)[0]
        assert [h.pid for h in mine] == [os.getpid()]
