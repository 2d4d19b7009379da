"""The iOS transport and the usbmuxd source against the simulated iPhone bench.

pymobiledevice3 talks to the fake usbmuxd + lockdownd for real; nothing is mocked. Each
test runs on a fast bench clock (a 135-second erase takes ~1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymobiledevice3.services.diagnostics import DiagnosticsService

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError, DeviceGone, NotAuthorised, ProtocolError
from wipeagent.platforms.ios.driver import IosDriver
from wipeagent.sources import PhoneArrival, PhoneDeparture, PhoneNotice, SourceEvent
from wipeagent.sources.usbmux import UsbmuxSource, UsbmuxWireError, parse_attached, slot_label
from wipeagent.transports import ios as ios_transport
from wipeagent.transports.ios import (
    TRUST_HINT,
    USBMUXD_HINT,
    IosSettings,
    UsbmuxAddress,
    connect_ios,
    load_pair_record,
)
from wipeagent.usb.ports import port_of
from wipeagent.usb.slots import SlotMap
from wipeagent_sim.ios import SimIosBench, pki
from wipeagent_sim.ios.bench import PhoneSpec

SPEED = 100.0
SETTINGS = IosSettings(pair_timeout_s=30, command_timeout_s=20, poll_interval_s=1)


def profile(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{body}', encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def bench_of(*phones: str | Path) -> AsyncIterator[tuple[SimIosBench, UsbmuxAddress]]:
    async with SimIosBench(list(phones), clock=Clock(SPEED)) as bench:
        yield bench, UsbmuxAddress.parse(bench.address)


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "library"), [
    ("", None),
    ("127.0.0.1:27015", "127.0.0.1:27015"),
    ("/run/usbmuxd", "/run/usbmuxd"),
    ("UNIX:/var/run/usbmuxd", "/var/run/usbmuxd"),
])
def test_usbmuxd_address_forms(text: str, library: str | None) -> None:
    assert UsbmuxAddress.parse(text).library == library


@pytest.mark.parametrize("text", ["localhost", "host:0", "host:99999", ":27015", "a:b"])
def test_bad_usbmuxd_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="usbmuxd address"):
        UsbmuxAddress.parse(text)


# --- pairing -------------------------------------------------------------------------------


async def test_pairs_once_then_reuses_the_stored_record(tmp_path: Path) -> None:
    # Nobody answers a second prompt: the second connection must not need one.
    waits = profile(tmp_path, "waits", "[trust]\nauto_accept = false\n")
    async with bench_of(waits) as (bench, address):
        udid = bench.phones[0].udid
        records = tmp_path / "records"
        clock = bench.clock
        bench.trust(udid)
        conn = await connect_ios(udid, address, records, clock, SETTINGS)
        assert conn.paired
        assert conn.values["SerialNumber"] == bench.phones[0].serial_number
        await conn.close()
        path = records / f"{udid}.plist"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds private keys
        record = load_pair_record(records, udid)
        assert record is not None and "EscrowBag" in record
        again = await connect_ios(udid, address, records, clock, SETTINGS)
        assert again.paired
        await again.close()


async def test_one_pair_of_rsa_keys_serves_every_pairing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = 0
    generate = ios_transport.rsa.generate_private_key

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal made
        if threading.current_thread().name.startswith("ios-keygen"):  # not the phones'
            made += 1
        return generate(*args, **kwargs)

    monkeypatch.setattr(ios_transport.rsa, "generate_private_key", counted)
    records = tmp_path / "records"
    async with bench_of("clean", "clean") as (bench, address):
        for phone in bench.phones:
            conn = await connect_ios(phone.udid, address, records, bench.clock, SETTINGS)
            assert conn.paired  # the simulated lockdownd accepted the certificates
            await conn.close()
        pair_records = [load_pair_record(records, p.udid) for p in bench.phones]
        device_key = pki.device_public_key_pem(bench.phones[0]._key)
    # Two keys (root and host) for the bench, once; none for the second phone.
    assert made == 2
    keys = records / ios_transport.PAIRING_KEYS_FILE
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    first, second = pair_records
    assert first is not None and second is not None
    for field in ("HostPrivateKey", "RootPrivateKey"):
        assert first[field] == second[field], field
    assert first["DeviceCertificate"] != second["DeviceCertificate"]  # each phone's own key
    # Each pairing has a HostID of its own (the after-erase check asks about one pairing).
    assert first["HostID"] != second["HostID"]
    # A restarted agent loads the same keys from the file.
    ios_transport._pairing_keys.clear()
    loaded = await ios_transport.pairing_keys(records)
    assert made == 2
    assert loaded.certificates(device_key)["HostPrivateKey"] == first["HostPrivateKey"]


async def test_a_loose_pairing_key_file_is_refused(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    keys = records / ios_transport.PAIRING_KEYS_FILE
    keys.write_bytes(b"not a key")
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        await ios_transport.pairing_keys(records)
    keys.chmod(0o600)
    with pytest.raises(ConfigError, match="two RSA keys"):
        await ios_transport.pairing_keys(records)


async def test_waits_for_trust_without_blocking_the_loop(tmp_path: Path) -> None:
    waits = profile(tmp_path, "waits", "[trust]\nauto_accept = false\n")
    async with bench_of(waits) as (bench, address):
        udid = bench.phones[0].udid
        clock = bench.clock
        lag = 0.0

        async def ticker() -> None:
            nonlocal lag
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lag = max(lag, time.monotonic() - before - 0.01)

        tick = asyncio.create_task(ticker())
        task = asyncio.create_task(connect_ios(udid, address, tmp_path / "r", clock, SETTINGS))
        await clock.sleep(5)
        assert not task.done()  # still waiting for the person
        bench.trust(udid)
        conn = await asyncio.wait_for(task, 10)
        tick.cancel()
        assert conn.paired
        await conn.close()
        # Key generation ran in the executor: the loop never stalled for long.
        assert lag < 0.5, lag


async def test_passcode_locked_phone_times_out_with_the_trust_hint(tmp_path: Path) -> None:
    async with bench_of("passcode_locked") as (bench, address):
        udid = bench.phones[0].udid
        settings = IosSettings(pair_timeout_s=10, poll_interval_s=1)
        with pytest.raises(NotAuthorised, match="locked with a passcode") as info:
            await connect_ios(udid, address, tmp_path / "r", bench.clock, settings)
        assert info.value.hint == TRUST_HINT
        # The person unlocks while the bench waits: pairing then goes through.
        task = asyncio.create_task(connect_ios(udid, address, tmp_path / "r", bench.clock,
                                               SETTINGS))
        await bench.clock.sleep(3)
        bench.unlock(udid)
        conn = await asyncio.wait_for(task, 10)
        assert conn.paired
        await conn.close()


async def test_dont_trust_is_not_authorised(tmp_path: Path) -> None:
    denies = profile(tmp_path, "denies", "[trust]\ndeny = true\nauto_accept_after = 1.0\n")
    async with bench_of(denies) as (bench, address):
        settings = IosSettings(pair_timeout_s=6, poll_interval_s=1)
        with pytest.raises(NotAuthorised, match="Don't Trust"):
            await connect_ios(bench.phones[0].udid, address, tmp_path / "r", bench.clock,
                              settings)


# --- errors --------------------------------------------------------------------------------


async def test_absent_phone_and_absent_usbmuxd_are_device_gone(tmp_path: Path) -> None:
    async with bench_of("clean") as (bench, address):
        udid = bench.phones[0].udid
        bench.unplug(udid)
        with pytest.raises(DeviceGone):
            await connect_ios(udid, address, tmp_path / "r", bench.clock, SETTINGS)
    nothing = UsbmuxAddress(path=str(tmp_path / "no-usbmuxd.sock"))
    with pytest.raises(DeviceGone) as info:
        await connect_ios("00008101-00F51CAC22442BD4", nothing, tmp_path / "r", Clock(SPEED),
                          SETTINGS)
    assert info.value.hint == USBMUXD_HINT


@pytest.mark.parametrize("fault", ["malformed_values", "oversized_frame", "tls_failure"])
async def test_misbehaving_phone_is_a_protocol_error(tmp_path: Path, fault: str) -> None:
    bad = profile(tmp_path, "bad", f"[trust]\nauto_accept_after = 1.0\n[faults]\n{fault} = true\n")
    async with bench_of(bad, "clean") as (bench, address):
        started = time.monotonic()
        with pytest.raises(ProtocolError):
            await connect_ios(bench.phones[0].udid, address, tmp_path / "r", bench.clock,
                              SETTINGS)
        assert time.monotonic() - started < 5  # refused at once, not read to 64 MiB
        # The other phone on the same usbmuxd is unaffected.
        good = await connect_ios(bench.phones[1].udid, address, tmp_path / "r", bench.clock,
                                 SETTINGS)
        assert good.paired
        await good.close()


async def test_services_and_missing_values(tmp_path: Path) -> None:
    async with bench_of("worn_battery") as (bench, address):
        conn = await connect_ios(bench.phones[0].udid, address, tmp_path / "r", bench.clock,
                                 SETTINGS)
        try:
            async with conn.service(DiagnosticsService) as diag:
                battery = await conn.call("battery", diag.get_battery())
            assert battery["CycleCount"] == 1150
            assert await conn.get_value("com.apple.no-such-domain") is None
            assert (await conn.get_value("com.apple.fmip")) == {"IsAssociated": False}
        finally:
            await conn.close()


# --- the usbmuxd source ----------------------------------------------------------------------


def test_attached_messages_are_validated() -> None:
    props = {"SerialNumber": "00008101000A1B2C3D4E5F60", "LocationID": 0x00030007,
             "ConnectionType": "USB"}
    att = parse_attached({"DeviceID": 4, "Properties": props})
    assert att.udid == "00008101-000A1B2C3D4E5F60"
    assert att.location == (3 << 16) | 7  # bus 3, USB address 7
    # No USB port found for it: a slot named after the phone (not its model's chip id).
    assert slot_label(att.udid) == "ios:000A1B2C3D4E5F60"
    for bad in ("../../etc/passwd", "$(reboot)", "x" * 300, 42):
        with pytest.raises(UsbmuxWireError):
            parse_attached({"DeviceID": 1, "Properties": {**props, "SerialNumber": bad}})


async def _next(events: AsyncIterator[SourceEvent], clock: Clock) -> SourceEvent:
    return await clock.wait_for(anext(events), 200)


async def test_source_follows_attach_and_detach(tmp_path: Path) -> None:
    async with bench_of("clean") as (bench, address):
        clock = bench.clock
        source = UsbmuxSource(address, lambda u: IosDriver(u, address, tmp_path, clock), clock,
                              sysfs=tmp_path / "no-sysfs")
        events = source.events()
        try:
            udid = bench.phones[0].udid
            first = await _next(events, clock)
            assert isinstance(first, PhoneArrival) and first.key == f"ios:{udid}"
            assert first.slot == slot_label(udid)  # no sysfs to find its port in
            assert isinstance(first.make_driver(), IosDriver)
            bench.unplug(udid)
            gone = await _next(events, clock)
            assert isinstance(gone, PhoneDeparture) and gone.key == first.key
            assert gone.slot == first.slot
            bench.plug(udid)
            back = await _next(events, clock)
            assert isinstance(back, PhoneArrival) and back.key == first.key
        finally:
            await events.aclose()  # type: ignore[attr-defined]


async def test_same_usb_port_same_slot_after_replug_and_reboot(tmp_path: Path) -> None:
    """usbmuxd's LocationID is bus and USB address, new at every enumeration; the slot
    follows the port the cable is in, with the bench's labels ([usb.slots])."""
    sysfs = tmp_path / "sysfs"
    phones = [PhoneSpec("clean", port="3-1.4"), PhoneSpec("clean", port="3-2.1")]
    async with SimIosBench(phones, clock=Clock(SPEED), sysfs_root=sysfs) as bench:
        clock = bench.clock
        address = UsbmuxAddress.parse(bench.address)
        source = UsbmuxSource(address, lambda u: IosDriver(u, address, tmp_path, clock), clock,
                              slots=SlotMap({"3-1.4": "A4"}), sysfs=sysfs)
        events = source.events()
        try:
            arrivals = [await _next(events, clock) for _ in range(2)]
            slots = {e.key: e.slot for e in arrivals if isinstance(e, PhoneArrival)}
            first, second = (f"ios:{p.udid}" for p in bench.phones)
            # The labelled port shows its label, the other one its port path.
            assert slots == {first: "A4", second: "usb-3-2.1"}
            udid = bench.phones[0].udid
            location = bench.usbmuxd.location(udid)
            for change in ("replug", "reboot"):
                if change == "replug":
                    bench.unplug(udid)
                    gone = await _next(events, clock)
                    bench.plug(udid)
                else:  # an erase: the phone leaves the bus and enumerates again
                    bench.phone(udid).start_reboot()
                    gone = await _next(events, clock)
                assert isinstance(gone, PhoneDeparture) and gone.slot == "A4"
                back = await _next(events, clock)
                assert isinstance(back, PhoneArrival) and back.key == first
                new_location = bench.usbmuxd.location(udid)
                assert new_location != location  # another USB address ...
                assert back.slot == "A4"  # ... the same port, the same slot
                location = new_location
            # A phone moved to another port takes that port's slot.
            bench.usbmuxd.remove_phone(udid)
            assert isinstance(await _next(events, clock), PhoneDeparture)
            bench.usbmuxd.add_phone(bench.phones[0], "3-7.7")
            moved = await _next(events, clock)
            assert isinstance(moved, PhoneArrival) and moved.slot == "usb-3-7.7"
        finally:
            await events.aclose()  # type: ignore[attr-defined]


def test_a_device_that_took_the_address_is_not_the_phone(tmp_path: Path) -> None:
    folder = tmp_path / "bus" / "usb" / "devices" / "1-2"
    folder.mkdir(parents=True)
    for name, value in (("busnum", "1"), ("devnum", "9"), ("serial", "OTHERDEVICE")):
        (folder / name).write_text(value + "\n")
    (tmp_path / "bus" / "usb" / "devices" / "usb1").mkdir()  # a root hub: never a port
    assert port_of(1, 9, sysfs=tmp_path) == "1-2"
    assert port_of(1, 9, serial="00008101-000A1B2C3D4E5F60", sysfs=tmp_path) is None
    (folder / "serial").write_text("00008101000A1B2C3D4E5F60\n")
    assert port_of(1, 9, serial="00008101-000A1B2C3D4E5F60", sysfs=tmp_path) == "1-2"
    assert port_of(1, 10, sysfs=tmp_path) is None
    assert port_of(1, 9, sysfs=tmp_path / "absent") is None


async def test_source_reports_missing_usbmuxd_and_reconnects(tmp_path: Path) -> None:
    sock = str(tmp_path / "usbmuxd.sock")
    address = UsbmuxAddress(path=sock)
    clock = Clock(SPEED)
    source = UsbmuxSource(address, lambda u: IosDriver(u, address, tmp_path, clock), clock,
                          max_backoff_s=2)
    events = source.events()
    try:
        notice = await _next(events, clock)
        assert isinstance(notice, PhoneNotice) and notice.hint == USBMUXD_HINT
        async with SimIosBench(["clean"], clock=clock, socket_path=sock) as bench:
            seen = [await _next(events, clock) for _ in range(2)]
            arrivals = [e for e in seen if isinstance(e, PhoneArrival)]
            assert [a.key for a in arrivals] == [f"ios:{bench.phones[0].udid}"]
        # usbmuxd went away: the phone departs, the technician is told.
        after = [await _next(events, clock) for _ in range(2)]
        assert any(isinstance(e, PhoneDeparture) for e in after)
        assert any(isinstance(e, PhoneNotice) and e.hint == USBMUXD_HINT for e in after)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
