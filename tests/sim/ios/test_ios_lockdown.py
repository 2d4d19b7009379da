"""Fake lockdownd through real pymobiledevice3: values, Trust prompt, pairing, TLS sessions."""

from __future__ import annotations

import asyncio
import contextlib
import plistlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from pymobiledevice3.ca import generate_pairing_cert_chain
from pymobiledevice3.exceptions import (
    GetProhibitedError,
    PairingDialogResponsePendingError,
    PasswordRequiredError,
    UserDeniedPairingError,
)
from pymobiledevice3.lockdown import UsbmuxLockdownClient, create_using_usbmux

from wipeagent.clock import Clock
from wipeagent_sim.ios import SimIosBench

Connect = Callable[..., Awaitable[UsbmuxLockdownClient]]


async def test_unpaired_host_reads_identity_only(bench: SimIosBench, connect: Connect) -> None:
    phone = bench.phones[0]
    client = await connect(phone.udid)
    try:
        assert not client.paired
        values = client.all_values
        assert values["UniqueDeviceID"] == phone.udid
        assert values["ProductType"] == "iPhone13,2"
        assert values["ProductVersion"] == "17.5.1"
        assert "SerialNumber" not in values
        assert "ActivationState" not in values
        assert "DevicePublicKey" not in values
        # A host needs the public key to pair, so that one key is readable alone.
        assert b"BEGIN RSA PUBLIC KEY" in await client.get_value(key="DevicePublicKey")
        with pytest.raises(GetProhibitedError):
            await client.get_value(key="SerialNumber")
        with pytest.raises(GetProhibitedError):
            await client.get_value(domain="com.apple.fmip")
    finally:
        await client.close()


async def test_trust_prompt_waits_for_the_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "waits.toml"
    profile.write_text('name = "waits"\n[trust]\nauto_accept = false\n', encoding="utf-8")
    async with SimIosBench([profile], clock=Clock(300)) as bench:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", bench.address)
        udid = bench.phones[0].udid
        client = await create_using_usbmux(
            serial=udid, autopair=False, pairing_records_cache_folder=tmp_path / "r"
        )
        try:
            with pytest.raises(PairingDialogResponsePendingError):
                await client.pair(timeout=0)
            with pytest.raises(PairingDialogResponsePendingError):
                await client.pair(timeout=0)  # still showing, nobody tapped
            bench.trust(udid)
            await client.pair(timeout=0)
            assert client.paired
        finally:
            await client.close()


async def test_auto_accept_after_profile_delay(bench: SimIosBench, connect: Connect) -> None:
    # The clean profile's person taps Trust 3 bench seconds after the prompt appears.
    client = await connect(bench.phones[0].udid)
    try:
        with pytest.raises(PairingDialogResponsePendingError):
            await client.pair(timeout=0)
        await bench.clock.sleep(6)
        await client.pair(timeout=0)
        assert client.paired
    finally:
        await client.close()


async def test_denied_pairing(bench: SimIosBench, connect: Connect) -> None:
    udid = bench.phones[0].udid
    bench.deny(udid)
    client = await connect(udid)
    try:
        with pytest.raises(UserDeniedPairingError):
            await client.pair(timeout=0)
        assert bench.phones[0].pairings == {}
    finally:
        await client.close()


@pytest.mark.parametrize("bench", [["passcode_locked"]], indirect=True)
async def test_locked_phone_refuses_to_pair_until_unlocked(
    bench: SimIosBench, connect: Connect
) -> None:
    udid = bench.phones[0].udid
    bench.trust(udid)
    client = await connect(udid)
    try:
        with pytest.raises(PasswordRequiredError):
            await client.pair(timeout=0)
        bench.unlock(udid)
        await client.pair(timeout=0)
        assert client.paired
    finally:
        await client.close()


async def test_pair_record_and_tls_session(
    bench: SimIosBench, connect: Connect, pair: Connect
) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    try:
        record = client.pair_record
        assert record is not None
        for field in (
            "HostCertificate",
            "HostPrivateKey",
            "RootCertificate",
            "DeviceCertificate",
            "EscrowBag",
        ):
            assert record[field], field
        # The device certificate the host made carries the phone's own public key.
        device_cert = x509.load_pem_x509_certificate(record["DeviceCertificate"])
        device_key = load_pem_public_key(phone.default_domain()["DevicePublicKey"])
        assert device_cert.public_key() == device_key
        load_pem_private_key(record["HostPrivateKey"], None)
        assert client.service.writer.get_extra_info("ssl_object") is not None  # TLS is on
        assert client.all_values["SerialNumber"] == phone.serial_number
        assert client.all_values["ActivationState"] == "Activated"
        assert await client.get_value("com.apple.fmip", "IsAssociated") is False
        assert (await client.get_value("com.apple.disk_usage"))["TotalDataCapacity"] > 0
        # usbmuxd now holds the record (pymobiledevice3 sent SavePairRecord).
        stored = bench.usbmuxd.pair_record(phone.udid)
        assert stored is not None and plistlib.loads(stored)["HostID"] == record["HostID"]
    finally:
        await client.close()
    # A second client finds the record in usbmuxd and starts its own TLS session.
    again = await connect(phone.udid)
    try:
        assert again.paired
        assert again.all_values["SerialNumber"] == phone.serial_number
        await again.stop_session()
        # pymobiledevice3 keeps talking TLS after StopSession; the session's rights are gone.
        assert await again.get_value(key="ProductVersion") == "17.5.1"
        with pytest.raises(GetProhibitedError):
            await again.get_value(key="SerialNumber")
    finally:
        await again.close()


async def test_start_session_with_unknown_host_is_refused(
    bench: SimIosBench, connect: Connect, pair: Connect
) -> None:
    phone = bench.phones[0]
    client = await pair(phone.udid)
    await client.close()
    phone.pairings.clear()  # the phone forgot the host (e.g. Reset Location & Privacy)
    again = await connect(phone.udid)
    try:
        assert not again.paired  # StartSession answered InvalidHostID
    finally:
        await again.close()


async def _raw_lockdown(bench: SimIosBench) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert bench.tcp_address is not None
    reader, writer = await asyncio.open_connection(*bench.tcp_address)
    device_id = bench.usbmuxd.device_id(bench.phones[0].udid)
    body = plistlib.dumps(
        {"MessageType": "Connect", "DeviceID": device_id, "PortNumber": socket.htons(62078)}
    )
    writer.write(struct.pack("<IIII", 16 + len(body), 1, 8, 1) + body)
    length = struct.unpack("<I", await reader.readexactly(4))[0]
    assert plistlib.loads((await reader.readexactly(length - 4))[12:])["Number"] == 0
    return reader, writer


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">I", 9) + b"<notplist",
        struct.pack(">I", 0x7FFFFFFF) + b"x" * 64,  # oversized length
        struct.pack(">I", len(plistlib.dumps(["a"]))) + plistlib.dumps(["a"]),  # not a dict
    ],
)
async def test_lockdown_drops_bad_frames_and_keeps_serving(
    bench: SimIosBench, connect: Connect, frame: bytes
) -> None:
    reader, writer = await _raw_lockdown(bench)
    writer.write(frame)
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()
    client = await connect(bench.phones[0].udid)
    assert client.all_values["UniqueDeviceID"] == bench.phones[0].udid
    await client.close()


async def test_binary_plist_request_gets_binary_answer(bench: SimIosBench) -> None:
    reader, writer = await _raw_lockdown(bench)
    query = plistlib.dumps(
        {"Request": "GetValue", "Key": "ProductVersion"}, fmt=plistlib.FMT_BINARY
    )
    writer.write(struct.pack(">I", len(query)) + query)
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    data = await reader.readexactly(length)
    assert data.startswith(b"bplist00")
    assert plistlib.loads(data)["Value"] == "17.5.1"
    writer.close()


class _TlsClient:
    """A lockdown client that runs TLS by hand (ssl.MemoryBIO), as libimobiledevice does,
    so that it can shut TLS down after StopSession and carry on in plaintext."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tls: ssl.SSLObject | None = None
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()

    async def _pump_out(self) -> None:
        if data := self.out.read():
            self.writer.write(data)
            await self.writer.drain()

    async def _feed(self) -> None:
        header = await self.reader.readexactly(5)
        self.inc.write(header + await self.reader.readexactly(int.from_bytes(header[3:5], "big")))

    async def start_tls(self, certfile: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(certfile)
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=False)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._pump_out()
                await self._feed()
        await self._pump_out()

    async def shutdown_tls(self) -> None:
        assert self.tls is not None
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()  # sends close_notify; does not wait for the phone's
        await self._pump_out()
        self.tls = None

    async def _read(self, n: int) -> bytes:
        if self.tls is None:
            return await self.reader.readexactly(n)
        buf = b""
        while len(buf) < n:
            try:
                buf += self.tls.read(n - len(buf))
            except ssl.SSLWantReadError:
                await self._feed()
        return buf

    async def request(self, message: dict[str, object]) -> dict[str, object]:
        payload = plistlib.dumps(message)
        frame = struct.pack(">I", len(payload)) + payload
        if self.tls is None:
            self.writer.write(frame)
        else:
            self.tls.write(frame)
            await self._pump_out()
        await self.writer.drain()
        (length,) = struct.unpack(">I", await self._read(4))
        return plistlib.loads(await self._read(length))


async def test_stop_session_returns_to_plaintext(
    bench: SimIosBench, pair: Connect, tmp_path: Path
) -> None:
    phone = bench.phones[0]
    paired = await pair(phone.udid)
    record = paired.pair_record
    await paired.close()
    assert record is not None
    pem = tmp_path / "host.pem"
    pem.write_bytes(record["HostCertificate"] + b"\n" + record["HostPrivateKey"])
    client = _TlsClient(*await _raw_lockdown(bench))
    session = await client.request(
        {"Request": "StartSession", "HostID": record["HostID"], "SystemBUID": "x"}
    )
    assert session["EnableSessionSSL"] is True
    await client.start_tls(str(pem))
    value = await client.request({"Request": "GetValue", "Key": "SerialNumber"})
    assert value["Value"] == phone.serial_number
    stop = await client.request({"Request": "StopSession", "SessionID": session["SessionID"]})
    assert stop["Result"] == "Success"
    await client.shutdown_tls()
    # Plaintext again, and without a session the serial number is off limits.
    assert (await client.request({"Request": "GetValue", "Key": "SerialNumber"}))[
        "Error"
    ] == "GetProhibited"
    assert (await client.request({"Request": "Goodbye"}))["Result"] == "Success"
    client.writer.close()


async def test_tls_session_needs_the_pairing_key(
    bench: SimIosBench, pair: Connect, tmp_path: Path
) -> None:
    # A host that knows a paired HostID but not its key cannot complete the handshake.
    phone = bench.phones[0]
    paired = await pair(phone.udid)
    record = paired.pair_record
    await paired.close()
    assert record is not None
    stranger = generate_pairing_cert_chain(phone.default_domain()["DevicePublicKey"])
    pem = tmp_path / "stranger.pem"
    pem.write_bytes(stranger[0] + b"\n" + stranger[1])  # its own host cert + key
    client = _TlsClient(*await _raw_lockdown(bench))
    session = await client.request({"Request": "StartSession", "HostID": record["HostID"]})
    assert session["EnableSessionSSL"] is True
    with pytest.raises((ssl.SSLError, asyncio.IncompleteReadError, ConnectionError)):
        await client.start_tls(str(pem))
        await client.request({"Request": "GetValue", "Key": "SerialNumber"})
    client.writer.close()
