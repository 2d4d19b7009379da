"""The fake usbmuxd, spoken to byte by byte and through pymobiledevice3's usbmux client."""

from __future__ import annotations

import asyncio
import plistlib
import socket
import struct
from pathlib import Path

import pytest
from pymobiledevice3 import usbmux

from wipeagent.clock import Clock
from wipeagent_sim.ios import SimIosBench, remote_control, serve_forever
from wipeagent_sim.ios.bench import PhoneSpec

HDR = struct.Struct("<IIII")


class RawMux:
    """A minimal usbmuxd client for exercising the wire protocol directly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, bench: SimIosBench) -> RawMux:
        assert bench.tcp_address is not None
        r, w = await asyncio.open_connection(*bench.tcp_address)
        return cls(r, w)

    def send(self, version: int, message: int, tag: int, body: bytes) -> None:
        self.writer.write(HDR.pack(16 + len(body), version, message, tag) + body)

    def send_plist(self, tag: int, payload: dict[str, object]) -> None:
        self.send(1, 8, tag, plistlib.dumps(payload))

    async def recv(self) -> tuple[int, int, int, bytes]:
        length, version, message, tag = HDR.unpack(
            await asyncio.wait_for(self.reader.readexactly(16), 5)
        )
        body = await asyncio.wait_for(self.reader.readexactly(length - 16), 5)
        return version, message, tag, body

    async def recv_plist(self) -> tuple[int, dict[str, object]]:
        version, message, tag, body = await self.recv()
        assert (version, message) == (1, 8)
        return tag, plistlib.loads(body)

    async def closed_by_peer(self) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), 5)
        except ConnectionResetError:
            return True
        return data == b""

    def close(self) -> None:
        self.writer.close()


async def test_read_buid_and_list_devices(bench: SimIosBench) -> None:
    mux = await RawMux.open(bench)
    mux.send_plist(7, {"MessageType": "ReadBUID"})
    tag, reply = await mux.recv_plist()
    assert tag == 7 and reply["BUID"] == bench.usbmuxd.buid
    mux.send_plist(8, {"MessageType": "ListDevices"})
    tag, reply = await mux.recv_plist()
    devices = reply["DeviceList"]
    assert isinstance(devices, list) and len(devices) == 1
    props = devices[0]["Properties"]
    assert props["SerialNumber"] == bench.phones[0].udid
    assert props["ConnectionType"] == "USB"
    mux.close()


async def test_pymobiledevice3_lists_devices_over_tcp_and_unix(tmp_path: Path) -> None:
    sock = str(tmp_path / "usbmuxd.sock")
    async with SimIosBench(["clean", "worn_battery"], clock=Clock(300), socket_path=sock) as bench:
        udids = sorted(p.udid for p in bench.phones)
        over_tcp = await usbmux.list_devices(usbmux_address=bench.address)
        over_unix = await usbmux.list_devices(usbmux_address=sock)
        assert sorted(d.serial for d in over_tcp) == udids
        assert sorted(d.serial for d in over_unix) == udids
        assert all(d.is_usb for d in over_tcp)


async def test_listen_pushes_detach_and_attach_with_new_device_id(bench: SimIosBench) -> None:
    udid = bench.phones[0].udid
    mux = await RawMux.open(bench)
    mux.send_plist(1, {"MessageType": "Listen"})
    _, result = await mux.recv_plist()
    assert result == {"MessageType": "Result", "Number": 0}
    _, attached = await mux.recv_plist()
    assert attached["MessageType"] == "Attached"
    first_id = attached["DeviceID"]
    bench.unplug(udid)
    _, detached = await mux.recv_plist()
    assert detached == {"MessageType": "Detached", "DeviceID": first_id}
    bench.plug(udid)
    _, again = await mux.recv_plist()
    assert again["MessageType"] == "Attached"
    assert again["Properties"]["SerialNumber"] == udid  # type: ignore[index]
    assert again["DeviceID"] != first_id
    mux.close()


async def test_location_id_is_bus_and_usb_address_like_usbmuxd(tmp_path: Path) -> None:
    """usbmuxd on Linux reports LocationID = (bus << 16) | the USB address the kernel gave
    the device (usbmuxd src/usb.c usb_get_location): a new address at every enumeration,
    so the port behind it is only found in sysfs, which the simulator keeps too."""
    sysfs = tmp_path / "sysfs"
    async with SimIosBench([PhoneSpec("clean", port="3-2.5")], clock=Clock(100),
                           sysfs_root=sysfs) as bench:
        udid = bench.phones[0].udid
        mux = await RawMux.open(bench)
        mux.send_plist(1, {"MessageType": "Listen"})
        await mux.recv_plist()
        addresses = []
        for _ in range(3):
            _, attached = await mux.recv_plist()
            assert attached["MessageType"] == "Attached"
            location = attached["Properties"]["LocationID"]  # type: ignore[index]
            assert isinstance(location, int) and location >> 16 == 3  # the bus
            address = location & 0xFFFF
            assert 1 < address <= 127
            addresses.append(address)
            device = sysfs / "bus" / "usb" / "devices" / "3-2.5"
            assert (device / "busnum").read_text().strip() == "3"
            assert (device / "devnum").read_text().strip() == str(address)
            assert (device / "serial").read_text().strip() == udid.replace("-", "")
            bench.unplug(udid)
            _, detached = await mux.recv_plist()
            assert detached["MessageType"] == "Detached"
            assert not device.exists()  # gone from sysfs with the device
            bench.plug(udid)
        assert len(set(addresses)) == 3  # the same port, a new address every time
        assert bench.usbmuxd.port(udid) == "3-2.5"
        mux.close()


async def test_connect_results(bench: SimIosBench) -> None:
    device_id = bench.usbmuxd.device_id(bench.phones[0].udid)
    mux = await RawMux.open(bench)
    mux.send_plist(
        1, {"MessageType": "Connect", "DeviceID": 999, "PortNumber": socket.htons(62078)}
    )
    assert (await mux.recv_plist())[1]["Number"] == 2  # BADDEV
    mux.send_plist(
        2, {"MessageType": "Connect", "DeviceID": device_id, "PortNumber": socket.htons(1234)}
    )
    assert (await mux.recv_plist())[1]["Number"] == 3  # CONNREFUSED: nothing listens there
    # Port in host byte order is a different port: refused, as on real usbmuxd.
    mux.send_plist(3, {"MessageType": "Connect", "DeviceID": device_id, "PortNumber": 62078})
    assert (await mux.recv_plist())[1]["Number"] == 3
    mux.send_plist(
        4, {"MessageType": "Connect", "DeviceID": device_id, "PortNumber": socket.htons(62078)}
    )
    assert (await mux.recv_plist())[1]["Number"] == 0
    # Now a raw pipe to lockdownd.
    query = plistlib.dumps({"Request": "QueryType", "Label": "test"})
    mux.writer.write(struct.pack(">I", len(query)) + query)
    (length,) = struct.unpack(">I", await mux.reader.readexactly(4))
    reply = plistlib.loads(await mux.reader.readexactly(length))
    assert reply == {"Request": "QueryType", "Type": "com.apple.mobile.lockdown"}
    mux.close()


async def test_binary_protocol_listen_and_connect(bench: SimIosBench) -> None:
    phone = bench.phones[0]
    mux = await RawMux.open(bench)
    mux.send(0, 3, 5, b"")  # LISTEN
    version, message, tag, body = await mux.recv()
    assert (version, message, tag, struct.unpack("<I", body)[0]) == (0, 1, 5, 0)
    version, message, _, body = await mux.recv()
    assert (version, message) == (0, 4)  # DEVICE_ADD
    device_id, product_id, serial, _location = struct.unpack("<IH256s2xI", body)
    assert serial.rstrip(b"\0").decode() == phone.udid
    assert product_id == phone.profile.identity.usb_product_id
    mux.close()

    mux = await RawMux.open(bench)
    mux.send(0, 2, 6, struct.pack("<IHH", device_id, socket.htons(62078), 0))  # CONNECT
    version, message, tag, body = await mux.recv()
    assert (version, message, tag, struct.unpack("<I", body)[0]) == (0, 1, 6, 0)
    mux.close()


async def test_bad_version_and_unknown_binary_command(bench: SimIosBench) -> None:
    mux = await RawMux.open(bench)
    mux.send(7, 8, 1, plistlib.dumps({"MessageType": "ListDevices"}))
    _version, message, tag, body = await mux.recv()
    assert (message, tag, struct.unpack("<I", body)[0]) == (1, 1, 6)  # BADVERSION
    mux.send(0, 42, 2, b"")
    _, message, tag, body = await mux.recv()
    assert (message, tag, struct.unpack("<I", body)[0]) == (1, 2, 1)  # BADCOMMAND
    mux.send_plist(3, {"MessageType": "FormatHardDisk"})
    assert (await mux.recv_plist())[1]["Number"] == 1
    mux.close()


async def test_pair_record_store(bench: SimIosBench) -> None:
    mux = await RawMux.open(bench)
    mux.send_plist(1, {"MessageType": "ReadPairRecord", "PairRecordID": "ABC-1"})
    assert (await mux.recv_plist())[1]["Number"] == 2  # ENOENT
    record = plistlib.dumps({"HostID": "H"})
    mux.send_plist(
        2, {"MessageType": "SavePairRecord", "PairRecordID": "ABC-1", "PairRecordData": record}
    )
    assert (await mux.recv_plist())[1]["Number"] == 0
    mux.send_plist(3, {"MessageType": "ReadPairRecord", "PairRecordID": "ABC-1"})
    assert (await mux.recv_plist())[1]["PairRecordData"] == record
    # A record ID that would escape a directory, and data that is not a plist, are refused.
    mux.send_plist(
        4, {"MessageType": "SavePairRecord", "PairRecordID": "../x", "PairRecordData": record}
    )
    assert (await mux.recv_plist())[1]["Number"] == 22
    mux.send_plist(
        5, {"MessageType": "SavePairRecord", "PairRecordID": "X", "PairRecordData": b"junk"}
    )
    assert (await mux.recv_plist())[1]["Number"] == 22
    mux.send_plist(6, {"MessageType": "DeletePairRecord", "PairRecordID": "ABC-1"})
    assert (await mux.recv_plist())[1]["Number"] == 0
    mux.send_plist(7, {"MessageType": "DeletePairRecord", "PairRecordID": "ABC-1"})
    assert (await mux.recv_plist())[1]["Number"] == 2
    mux.close()


@pytest.mark.parametrize(
    "raw",
    [
        HDR.pack(16 + 9, 1, 8, 1) + b"<notplist",  # malformed plist
        HDR.pack(16 + 11, 1, 8, 1) + plistlib.dumps([1])[:0] + b"bplist00xyz",  # broken binary
        HDR.pack(16 + len(plistlib.dumps([1, 2])), 1, 8, 1) + plistlib.dumps([1, 2]),  # not a dict
        HDR.pack(0x10000 + 1, 1, 8, 1),  # oversized
        HDR.pack(3, 1, 8, 1),  # shorter than its own header
    ],
)
async def test_bad_input_drops_only_that_client(bench: SimIosBench, raw: bytes) -> None:
    mux = await RawMux.open(bench)
    mux.writer.write(raw)
    assert await mux.closed_by_peer()
    # The daemon still serves others.
    assert [d.serial for d in await usbmux.list_devices(usbmux_address=bench.address)] == [
        bench.phones[0].udid
    ]


async def test_remote_control_trust_and_unplug(bench: SimIosBench) -> None:
    phone = bench.phones[0]
    await remote_control(bench.address, "unplug", phone.udid)
    assert not phone.visible
    assert await usbmux.list_devices(usbmux_address=bench.address) == []
    await remote_control(bench.address, "plug", phone.udid)
    assert phone.visible
    with pytest.raises(LookupError):
        await remote_control(bench.address, "trust", "0000-NOPE")
    with pytest.raises(ValueError):
        await remote_control(bench.address, "explode", phone.udid)


def _exists(path: str) -> bool:
    return Path(path).exists()


async def test_serve_forever_runs_until_cancelled(tmp_path: Path) -> None:
    started: asyncio.Future[SimIosBench] = asyncio.get_running_loop().create_future()
    sock = str(tmp_path / "mux")
    task = asyncio.create_task(
        serve_forever(
            ["clean", "old_ios"],
            listen="127.0.0.1:0",
            socket_path=sock,
            speed=100,
            ready=started.set_result,
        )
    )
    try:
        bench = await asyncio.wait_for(started, 10)
        devices = await usbmux.list_devices(usbmux_address=bench.address)
        assert sorted(d.serial for d in devices) == sorted(p.udid for p in bench.phones)
        await remote_control(sock, "unplug", bench.phones[1].udid)
        assert len(await usbmux.list_devices(usbmux_address=sock)) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not _exists(sock)  # the socket file is removed on shutdown


async def test_pair_records_persist_in_a_directory(tmp_path: Path) -> None:
    records = tmp_path / "records"
    async with SimIosBench(["clean"], clock=Clock(300), pair_record_dir=records) as bench:
        mux = await RawMux.open(bench)
        data = plistlib.dumps({"HostID": "H1"})
        mux.send_plist(
            1, {"MessageType": "SavePairRecord", "PairRecordID": "REC-1", "PairRecordData": data}
        )
        assert (await mux.recv_plist())[1]["Number"] == 0
        mux.close()
    assert _mode(records / "REC-1.plist") == 0o600  # a pair record holds private keys
    async with SimIosBench(["clean"], clock=Clock(300), pair_record_dir=records) as bench:
        assert bench.usbmuxd.pair_record("REC-1") == data


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_wait_visible_follows_unplug_and_plug(bench: SimIosBench) -> None:
    udid = bench.phones[0].udid
    bench.unplug(udid)
    await bench.wait_visible(udid, False, within=1)
    with pytest.raises(TimeoutError):
        await bench.wait_visible(udid, True, within=1)
    bench.plug(udid)
    await bench.wait_visible(udid, True, within=1)
