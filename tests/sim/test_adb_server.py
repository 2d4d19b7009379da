"""The fake adbd against the real adb-shell client, and against raw bytes for the protocol
checks a well-behaved client never triggers."""

from __future__ import annotations

import asyncio
import base64
import errno
import io
import socket
import stat
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from adb_fixtures import MODEL, HostKey, KeyListingTinyPhone, TinyPhone
from adb_shell import exceptions as adb_exc
from adb_shell.adb_device_async import AdbDeviceTcpAsync

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError
from wipeagent_sim.adb.protocol import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_VERSION,
    A_VERSION_MIN,
    A_WRTE,
    AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SHELL_HEADER,
    InvalidAndroidKey,
    PacketHeader,
    checksum,
    decode_android_pubkey,
    pack_packet,
    parse_header,
    verify_auth_signature,
)
from wipeagent_sim.adb.server import INTERACTIVE_REFUSAL, SUPPORTED_FEATURES, AdbServer
from wipeagent_sim.android.bench import SimBench, serve_forever
from wipeagent_sim.android.phone import SimAndroidPhone

# --- helpers ---------------------------------------------------------------------------


async def adb_connect(port: int, key: HostKey, *, auth_timeout_s: float = 5.0) -> AdbDeviceTcpAsync:
    dev = AdbDeviceTcpAsync("127.0.0.1", port, default_transport_timeout_s=5.0)
    try:
        await dev.connect(rsa_keys=[key.signer], auth_timeout_s=auth_timeout_s, read_timeout_s=5.0)
    except BaseException:
        await dev.close()  # adb-shell leaves the socket open when connect fails
        raise
    return dev


@pytest.fixture
async def device(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> AsyncIterator[AdbDeviceTcpAsync]:
    tiny_phone.authorised.add(adb_host_key.pubkey)
    dev = await adb_connect(adb_server.port, adb_host_key)
    yield dev
    await dev.close()


async def shell_v2(dev: AdbDeviceTcpAsync, command: str) -> tuple[bytes, bytes, int | None]:
    """Run a command over shell protocol v2 through adb-shell's streaming service."""
    raw = b""
    async for chunk in dev._streaming_service(
        b"shell,v2,raw", command.encode(), read_timeout_s=5.0, decode=False
    ):
        raw += chunk
    stdout, stderr, exit_code = b"", b"", None
    while raw:
        packet_id, length = SHELL_HEADER.unpack_from(raw)
        data = raw[SHELL_HEADER.size : SHELL_HEADER.size + length]
        assert len(data) == length, "truncated shell packet"
        raw = raw[SHELL_HEADER.size + length :]
        if packet_id == 1:
            stdout += data
        elif packet_id == 2:
            stderr += data
        elif packet_id == 3:
            assert exit_code is None, "two exit packets"
            assert length == 1
            exit_code = data[0]
        else:
            pytest.fail(f"unexpected shell packet id {packet_id}")
    return stdout, stderr, exit_code


class RawClient:
    """A minimal client that writes raw ADB packets, for checks adb-shell cannot provoke."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        await self.send_raw(pack_packet(command, arg0, arg1, data))

    async def recv(self, within: float = 3.0) -> tuple[PacketHeader, bytes]:
        async with asyncio.timeout(within):
            header = parse_header(await self.reader.readexactly(HEADER_SIZE))
            data = await self.reader.readexactly(header.data_length)
        assert header.magic == header.command ^ 0xFFFFFFFF
        assert checksum(data) == header.data_check
        return header, data

    async def is_dropped(self, within: float = 3.0) -> bool:
        """True if the server closes the connection (after any packets in flight)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    if not await self.reader.read(65536):
                        return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def handshake(
        self, key: HostKey, *, version: int = A_VERSION_MIN, maxdata: int = 1024 * 1024
    ) -> PacketHeader:
        await self.send(A_CNXN, version, maxdata, b"host::features=shell_v2\0")
        header, token = await self.recv()
        assert (header.command, header.arg0, len(token)) == (A_AUTH, AUTH_TOKEN, 20)
        await self.send(A_AUTH, AUTH_SIGNATURE, 0, key.signer.Sign(token))
        header, _ = await self.recv()
        assert header.command == A_CNXN, "key should have been authorised by signature"
        return header

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> AsyncIterator[RawClient]:
    tiny_phone.authorised.add(adb_host_key.pubkey)
    client = await RawClient.open(adb_server.port)
    yield client
    await client.close()


# --- Android keys ----------------------------------------------------------------------


def test_android_pubkey_roundtrip_and_signature(
    adb_host_key: HostKey, adb_other_host_key: HostKey
) -> None:
    key = decode_android_pubkey(adb_host_key.pubkey)
    token = bytes(range(20))
    signature = adb_host_key.signer.Sign(token)
    assert verify_auth_signature(key, token, signature)
    assert not verify_auth_signature(key, bytes(20), signature)  # another token
    assert not verify_auth_signature(key, token, adb_other_host_key.signer.Sign(token))
    assert not verify_auth_signature(key, token, signature[:-1])


def test_android_pubkey_rejects_corruption(adb_host_key: HostKey) -> None:
    b64, _, comment = adb_host_key.pubkey.partition(b" ")
    raw = bytearray(base64.b64decode(b64))
    for offset in (0, 4, 8 + 100, 8 + 256 + 5, len(raw) - 4):  # words, n0inv, n, rr, e
        broken = bytearray(raw)
        broken[offset] ^= 0x01
        with pytest.raises(InvalidAndroidKey):
            decode_android_pubkey(base64.b64encode(bytes(broken)) + b" " + comment)
    with pytest.raises(InvalidAndroidKey):
        decode_android_pubkey(b"not base64!!")
    with pytest.raises(InvalidAndroidKey):
        decode_android_pubkey(base64.b64encode(bytes(raw[:-4])))
    with pytest.raises(InvalidAndroidKey):
        decode_android_pubkey(b"A" * 5000)


# --- handshake and auth with adb-shell -------------------------------------------------


@pytest.mark.parametrize("phone_class", [TinyPhone, KeyListingTinyPhone])
async def test_new_key_prompts_then_signature_suffices(
    phone_class: type[TinyPhone], adb_host_key: HostKey
) -> None:
    phone = phone_class()
    async with AdbServer(phone) as server:
        dev = await adb_connect(server.port, adb_host_key)
        assert phone.prompts == [adb_host_key.pubkey]
        assert await dev.shell("getprop ro.product.model") == MODEL + "\n"
        await dev.close()

        # Second connection: the key is authorised now, so the signature step succeeds
        # and the phone does not ask again.
        dev = await adb_connect(server.port, adb_host_key)
        assert phone.prompts == [adb_host_key.pubkey]
        assert await dev.shell("echo again") == "again\n"
        await dev.close()


async def test_key_authorised_before_start_passes_by_signature(adb_host_key: HostKey) -> None:
    # Persisted adb_keys (phone state from an earlier run): the signature alone suffices,
    # so a client holding the key never sends RSAPUBLICKEY and the person is never asked.
    phone = KeyListingTinyPhone(authorised={adb_host_key.pubkey}, accept_prompt=False)
    async with AdbServer(phone) as server:
        client = await RawClient.open(server.port)
        header = await client.handshake(adb_host_key)
        assert header.command == A_CNXN
        await client.close()
    assert phone.prompts == []


async def test_other_key_is_not_accepted_by_signature(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey, adb_other_host_key: HostKey
) -> None:
    tiny_phone.authorised.add(adb_host_key.pubkey)
    adb_server.remember_key(adb_host_key.pubkey, decode_android_pubkey(adb_host_key.pubkey))
    tiny_phone.accept_prompt = False
    with pytest.raises((adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException)):
        await adb_connect(adb_server.port, adb_other_host_key, auth_timeout_s=0.5)
    assert tiny_phone.prompts == [adb_other_host_key.pubkey]
    assert adb_other_host_key.pubkey not in tiny_phone.authorised


async def test_prompt_that_waits_keeps_connection_usable(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    tiny_phone.accept_prompt = None  # nobody taps Allow
    raw_client = await RawClient.open(adb_server.port)
    await raw_client.send(A_CNXN, A_VERSION, 1024 * 1024, b"host::\0")
    header, token = await raw_client.recv()
    await raw_client.send(A_AUTH, AUTH_RSAPUBLICKEY, 0, adb_host_key.pubkey + b"\0")
    await asyncio.sleep(0.1)
    assert tiny_phone.prompts == [adb_host_key.pubkey]
    # While the prompt is up, the connection still answers: a fresh signature attempt
    # with a now-authorised key goes through.
    tiny_phone.authorised.add(adb_host_key.pubkey)
    await raw_client.send(A_AUTH, AUTH_SIGNATURE, 0, adb_host_key.signer.Sign(token))
    header, banner = await raw_client.recv()
    assert header.command == A_CNXN
    assert banner.startswith(b"device::")
    await raw_client.close()


async def test_usb_debugging_off_refuses(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    tiny_phone.enabled = False
    tiny_phone.authorised.add(adb_host_key.pubkey)
    client = await RawClient.open(adb_server.port)
    await client.send(A_CNXN, A_VERSION, 1024 * 1024, b"host::\0")
    assert await client.is_dropped()
    await client.close()


async def test_banner_advertises_supported_features(raw: RawClient, adb_host_key: HostKey) -> None:
    await raw.send(A_CNXN, A_VERSION, 1024 * 1024, b"host::\0")
    _, token = await raw.recv()
    await raw.send(A_AUTH, AUTH_SIGNATURE, 0, adb_host_key.signer.Sign(token))
    _, banner = await raw.recv()
    features = banner.split(b"features=")[1].decode().split(",")
    assert tuple(features) == SUPPORTED_FEATURES


# --- services with adb-shell -----------------------------------------------------------


async def test_shell_v1_merges_stderr_and_has_no_exit_code(device: AdbDeviceTcpAsync) -> None:
    assert await device.shell("getprop ro.product.model") == MODEL + "\n"
    assert await device.shell("fail 3 oops") == "partial\noops\n"
    assert await device.exec_out("echo exec works") == "exec works\n"


async def test_shell_v2_exit_codes_and_stderr(device: AdbDeviceTcpAsync) -> None:
    assert await shell_v2(device, "getprop ro.product.model") == (MODEL.encode() + b"\n", b"", 0)
    assert await shell_v2(device, "false") == (b"", b"", 1)
    assert await shell_v2(device, "fail 42 went wrong") == (b"partial\n", b"went wrong\n", 42)
    out, err, code = await shell_v2(device, "no-such-tool")
    assert (out, code) == (b"", 127)
    assert b"not found" in err


async def test_interactive_shell_is_refused_clearly(device: AdbDeviceTcpAsync) -> None:
    assert await device.shell("") == INTERACTIVE_REFUSAL.decode()
    assert await shell_v2(device, "") == (b"", INTERACTIVE_REFUSAL, 1)


async def test_big_output_spans_many_packets(device: AdbDeviceTcpAsync) -> None:
    size = 3 * MAX_PAYLOAD + 12345
    chunks = [
        c async for c in device.streaming_shell(f"big {size}", read_timeout_s=5.0, decode=False)
    ]
    data = b"".join(chunks)
    assert len(data) == size
    assert data == (bytes(range(256)) * (size // 256 + 1))[:size]
    assert len(chunks) >= 4
    assert max(len(c) for c in chunks) <= MAX_PAYLOAD  # negotiated maxdata is honoured
    stdout, _, code = await shell_v2(device, f"big {size}")
    assert (len(stdout), code) == (size, 0)


async def test_concurrent_streams_and_connections(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    tiny_phone.authorised.add(adb_host_key.pubkey)
    devs = [await adb_connect(adb_server.port, adb_host_key) for _ in range(3)]
    commands = [(dev, f"echo conn{i} cmd{j}") for i, dev in enumerate(devs) for j in range(4)]
    results = await asyncio.gather(*(dev.shell(cmd) for dev, cmd in commands))
    assert results == [cmd.removeprefix("echo ") + "\n" for _, cmd in commands]
    for dev in devs:
        await dev.close()


async def test_push_pull_stat_list(
    device: AdbDeviceTcpAsync, tiny_phone: TinyPhone, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 1000  # 256 000 bytes: many sync DATA chunks
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    await device.push(
        str(src), "/sdcard/Download/blob.bin", st_mode=stat.S_IFREG | 0o640, mtime=1_700_000_123
    )
    data, mode, mtime = tiny_phone.files["/sdcard/Download/blob.bin"]
    assert (data, mode, mtime) == (payload, stat.S_IFREG | 0o640, 1_700_000_123)

    assert await device.stat("/sdcard/Download/blob.bin") == (
        stat.S_IFREG | 0o640,
        len(payload),
        1_700_000_123,
    )
    assert await device.stat("/sdcard/missing") == (0, 0, 0)

    dst = tmp_path / "dst.bin"
    await device.pull("/sdcard/Download/blob.bin", str(dst))
    assert dst.read_bytes() == payload

    entries = await device.list("/sdcard/Download")
    assert [(e.filename, e.size) for e in entries] == [(b"blob.bin", len(payload))]

    with pytest.raises(adb_exc.AdbCommandFailureException, match="No such file"):
        await device.pull("/sdcard/missing", str(tmp_path / "x"))
    with pytest.raises(adb_exc.PushFailedError, match="Read-only"):
        await device.push(io.BytesIO(b"x"), "/system/build.prop")


async def test_reboot_goes_offline_until_power_cycle_finishes(
    device: AdbDeviceTcpAsync, adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    tiny_phone.reboot_gate = asyncio.Event()
    port = adb_server.port
    await device.reboot()
    await asyncio.sleep(0.2)
    assert tiny_phone.reboots == [""]
    assert not adb_server.online
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    # The port stays the phone's while it is off: nothing else on the machine can take it
    # (another simulator, an outgoing connection's source port), so it comes back there.
    with socket.socket() as other, pytest.raises(OSError) as taken:
        other.bind(("127.0.0.1", port))
    assert taken.value.errno == errno.EADDRINUSE
    # The old connection is gone too.
    with pytest.raises((adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException, ConnectionError)):
        await device.shell("echo still there?", read_timeout_s=0.5, transport_timeout_s=0.5)

    tiny_phone.reboot_gate.set()
    await adb_server.wait_online(within=200)
    assert adb_server.port == port
    assert (tiny_phone.power_cycles_finished, adb_server.power_cycles) == (1, 1)
    dev = await adb_connect(port, adb_host_key)
    assert await dev.shell("echo back") == "back\n"
    await dev.close()


async def test_power_cycle_from_inside_a_shell_command(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    # A factory reset is a shell command whose phone-side handler calls the power-cycle
    # handler itself; the phone's coroutine must not be cancelled by the connection drop.
    finished: list[tuple[int, bool]] = []
    done = asyncio.Event()
    original_shell = tiny_phone.shell

    async def shell(command: str) -> object:
        if command == "reset":
            assert tiny_phone.handler is not None
            await tiny_phone.handler()  # the connection serving this command drops now
            finished.append((tiny_phone.power_cycles_finished, adb_server.online))
            done.set()
            return await original_shell("true")
        return await original_shell(command)

    tiny_phone.shell = shell  # type: ignore[method-assign,assignment]
    tiny_phone.authorised.add(adb_host_key.pubkey)
    dev = await adb_connect(adb_server.port, adb_host_key)
    with pytest.raises((adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException, ConnectionError)):
        await dev.shell("reset", read_timeout_s=0.5, transport_timeout_s=0.5)
    await dev.close()
    await adb_server.wait_online(within=200)
    async with asyncio.timeout(2):
        await done.wait()  # the phone's command carried on after the connection dropped
    # The handler returned only once the phone had booted and the server listened again.
    assert finished == [(1, True)]
    assert tiny_phone.power_cycles_finished == 1
    dev = await adb_connect(adb_server.port, adb_host_key)
    assert await dev.shell("echo ok") == "ok\n"
    await dev.close()


# --- fault injection, observed by adb-shell --------------------------------------------


@pytest.mark.parametrize(
    "fault", ["malformed_packet", "wrong_checksum", "oversized_payload", "hang", "disconnect"]
)
async def test_injected_fault_is_an_error_for_adb_shell(
    fault: str, adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    tiny_phone.authorised.add(adb_host_key.pubkey)
    tiny_phone.faults["shell:getprop"] = fault
    dev = await adb_connect(adb_server.port, adb_host_key)
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        await dev.shell(
            "getprop ro.product.model", transport_timeout_s=1.0, read_timeout_s=1.0, timeout_s=2.0
        )
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, f"{fault} took {elapsed:.1f}s to surface"
    assert isinstance(
        info.value,
        (
            adb_exc.InvalidCommandError,
            adb_exc.InvalidChecksumError,
            adb_exc.AdbTimeoutError,
            adb_exc.TcpTimeoutException,
            ConnectionError,
        ),
    ), repr(info.value)
    expected = {
        "malformed_packet": adb_exc.InvalidCommandError,
        "wrong_checksum": adb_exc.InvalidChecksumError,
    }.get(fault)
    if expected is not None:
        assert isinstance(info.value, expected)
    await dev.close()
    # The phone is otherwise fine: other services on a new connection work.
    dev = await adb_connect(adb_server.port, adb_host_key)
    assert await dev.shell("echo fine") == "fine\n"
    await dev.close()


# --- raw protocol checks ---------------------------------------------------------------


async def test_version_and_maxdata_negotiation(
    adb_server: AdbServer, tiny_phone: TinyPhone, adb_host_key: HostKey
) -> None:
    tiny_phone.authorised.add(adb_host_key.pubkey)
    cases = [
        (A_VERSION_MIN, 1024 * 1024, A_VERSION_MIN, MAX_PAYLOAD),
        (A_VERSION, 1024 * 1024, A_VERSION, MAX_PAYLOAD),
        (0x01000002, 8192, A_VERSION, 8192),
    ]
    for version, maxdata, want_version, want_maxdata in cases:
        client = await RawClient.open(adb_server.port)
        header = await client.handshake(adb_host_key, version=version, maxdata=maxdata)
        assert (header.arg0, header.arg1) == (want_version, want_maxdata)
        await client.close()


async def test_bad_magic_drops_connection(raw: RawClient) -> None:
    await raw.send_raw(pack_packet(A_CNXN, A_VERSION, 4096, b"host::\0", magic=0))
    assert await raw.is_dropped()


async def test_oversized_packet_drops_connection(raw: RawClient, adb_host_key: HostKey) -> None:
    await raw.handshake(adb_host_key, maxdata=8192)
    await raw.send(A_OPEN, 1, 0, b"shell:" + b"x" * 9000)
    assert await raw.is_dropped()


async def test_checksum_checked_only_for_old_version(
    adb_server: AdbServer, raw: RawClient, adb_host_key: HostKey
) -> None:
    await raw.handshake(adb_host_key, version=A_VERSION_MIN)
    await raw.send_raw(pack_packet(A_OPEN, 1, 0, b"shell:echo hi\0", data_check=1))
    assert await raw.is_dropped()

    client = await RawClient.open(adb_server.port)
    await client.handshake(adb_host_key, version=A_VERSION)
    await client.send_raw(pack_packet(A_OPEN, 7, 0, b"shell:echo hi\0", data_check=0))
    header, _ = await client.recv()
    assert (header.command, header.arg1) == (A_OKAY, 7)
    header, data = await client.recv()
    assert (header.command, data) == (A_WRTE, b"hi\n")
    await client.close()


async def test_cnxn_checksum_follows_the_offered_version(adb_server: AdbServer) -> None:
    # Debian's adb reconnecting to a known device sends CNXN 0x01000001 with data_check 0.
    client = await RawClient.open(adb_server.port)
    await client.send_raw(pack_packet(A_CNXN, A_VERSION, 4096, b"host::\0", data_check=0))
    header, _ = await client.recv()
    assert header.command == A_AUTH
    await client.close()
    # An old-version client must get its checksum right.
    client = await RawClient.open(adb_server.port)
    await client.send_raw(pack_packet(A_CNXN, A_VERSION_MIN, 4096, b"host::\0", data_check=0))
    assert await client.is_dropped()
    await client.close()


async def test_packets_before_auth_drop_connection(raw: RawClient) -> None:
    await raw.send(A_CNXN, A_VERSION, 4096, b"host::\0")
    await raw.recv()  # AUTH token
    await raw.send(A_OPEN, 1, 0, b"shell:echo sneaky\0")
    assert await raw.is_dropped()


async def test_invalid_public_key_drops_connection(raw: RawClient) -> None:
    await raw.send(A_CNXN, A_VERSION, 4096, b"host::\0")
    await raw.recv()
    await raw.send(A_AUTH, AUTH_RSAPUBLICKEY, 0, b"QUFBQQ== evil@host\0")
    assert await raw.is_dropped()


async def test_unknown_service_is_closed_like_adbd(raw: RawClient, adb_host_key: HostKey) -> None:
    await raw.handshake(adb_host_key)
    for service in (
        b"jdwp:1234",
        b"shell",
        b"reboot:$(rm -rf /)",
        b"sync:extra",
        b"tcpip:5555",
        b"\xff\xfe:bad utf8",
    ):
        await raw.send(A_OPEN, 5, 0, service + b"\0")
        header, _ = await raw.recv()
        assert (header.command, header.arg0, header.arg1) == (A_CLSE, 0, 5), service
    # The connection is still good.
    await raw.send(A_OPEN, 6, 0, b"shell:echo ok\0")
    assert (await raw.recv())[0].command == A_OKAY


async def test_flow_control_one_write_in_flight(raw: RawClient, adb_host_key: HostKey) -> None:
    await raw.handshake(adb_host_key, maxdata=4096)
    await raw.send(A_OPEN, 9, 0, b"shell:big 20000\0")
    okay, _ = await raw.recv()
    assert okay.command == A_OKAY
    local = okay.arg0
    received = b""
    for i in range(5):  # 20000 bytes = 4 full packets of 4096 + 3616
        header, data = await raw.recv()
        assert (header.command, header.arg0, header.arg1) == (A_WRTE, local, 9)
        assert len(data) == (4096 if i < 4 else 3616)
        received += data
        if i < 4:
            # Nothing more arrives until we acknowledge.
            with pytest.raises(TimeoutError):
                await raw.recv(within=0.2)
        await raw.send(A_OKAY, 9, local)
    header, data = await raw.recv()
    assert header.command == A_CLSE
    assert received == (bytes(range(256)) * 80)[:20000]


async def test_client_close_is_confirmed_and_stale_packets_ignored(
    raw: RawClient, adb_host_key: HostKey
) -> None:
    await raw.handshake(adb_host_key)
    await raw.send(A_OPEN, 3, 0, b"sync:\0")
    okay, _ = await raw.recv()
    await raw.send(A_CLSE, 3, okay.arg0)
    header, _ = await raw.recv()
    assert (header.command, header.arg0, header.arg1) == (A_CLSE, okay.arg0, 3)
    # Late packets for the closed stream are ignored, not fatal.
    await raw.send(A_WRTE, 3, okay.arg0, b"late")
    await raw.send(A_OKAY, 3, okay.arg0)
    await raw.send(A_OPEN, 4, 0, b"shell:echo alive\0")
    assert (await raw.recv())[0].command == A_OKAY
    assert (await raw.recv())[1] == b"alive\n"


async def test_sync_rejects_bad_requests(raw: RawClient, adb_host_key: HostKey) -> None:
    await raw.handshake(adb_host_key)

    async def sync_exchange(request: bytes) -> bytes:
        await raw.send(A_OPEN, 11, 0, b"sync:\0")
        okay, _ = await raw.recv()
        await raw.send(A_WRTE, 11, okay.arg0, request)
        reply = b""
        while True:
            header, data = await raw.recv()
            if header.command == A_CLSE:
                return reply
            if header.command == A_WRTE:
                reply += data
                await raw.send(A_OKAY, 11, okay.arg0)

    reply = await sync_exchange(b"RECV" + struct.pack("<I", 2000) + b"/" * 2000)
    assert reply.startswith(b"FAIL") and b"path too long" in reply
    reply = await sync_exchange(b"SEND" + struct.pack("<I", 11) + b"/sdcard/abc")
    assert reply.startswith(b"FAIL") and b"PATH,MODE" in reply
    reply = await sync_exchange(
        b"SEND" + struct.pack("<I", 15) + b"/sdcard/a,33188" + b"DATA" + struct.pack("<I", 70000)
    )
    assert reply.startswith(b"FAIL") and b"exceeds" in reply
    reply = await sync_exchange(b"NOPE" + struct.pack("<I", 0))
    assert reply.startswith(b"FAIL")
    reply = await sync_exchange(
        b"STA2" + struct.pack("<I", 8) + b"/missing" + b"QUIT" + struct.pack("<I", 0)
    )
    assert reply[:4] == b"STA2" and struct.unpack_from("<I", reply, 4)[0] == 2  # ENOENT


# --- the real simulated phone (wipeagent_sim.android) on a SimBench --------------------

FAST = 100.0  # bench speed: a 45 s reboot takes 0.45 s


async def wait_for_power_cycles(phone: SimAndroidPhone, count: int) -> None:
    """Wait (up to 10 s) until the phone has completed `count` power cycles."""
    for _ in range(1000):
        if phone.counters.power_cycles >= count:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"the phone did not complete {count} power cycles")


async def test_bench_serves_real_profiles_and_keys_persist(tmp_path: Path,
                                                           adb_host_key: HostKey) -> None:
    clock = Clock(speed=FAST)
    async with SimBench(profiles=["pixel8-clean", "locked"], host="127.0.0.1", base_port=0,
                        state_dir=tmp_path, clock=clock) as bench:
        assert [p.profile for p in bench.phones] == ["pixel8-clean", "locked"]
        assert len({p.port for p in bench.phones}) == 2
        for _profile, phone, host, port in bench.phones:
            assert host == "127.0.0.1"
            dev = await adb_connect(port, adb_host_key)  # first contact: the prompt
            model = phone.properties()["ro.product.model"]
            assert await dev.shell("getprop ro.product.model") == model + "\n"
            assert await shell_v2(dev, "getprop ro.product.model") == (
                model.encode() + b"\n", b"", 0)
            await dev.close()
        serials = [p.phone.serial for p in bench.phones]

    # A new bench on the same state: the persisted key passes by signature alone.
    async with SimBench(profiles=["pixel8-clean", "locked"], state_dir=tmp_path,
                        clock=clock) as bench:
        assert [p.phone.serial for p in bench.phones] == serials
        for entry in bench.phones:
            client = await RawClient.open(entry.port)
            await client.handshake(adb_host_key, version=A_VERSION)
            await client.close()


async def test_bench_reboot_and_testharness_reset(tmp_path: Path, adb_host_key: HostKey) -> None:
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path,
                        clock=Clock(speed=FAST)) as bench:
        _, phone, _, port = bench.phones[0]
        server = bench.server(phone.serial)
        dev = await adb_connect(port, adb_host_key)
        await dev.reboot()
        await wait_for_power_cycles(phone, 1)
        await server.wait_online(within=600)
        assert phone.counters.history == ["reboot"]
        await dev.close()

        # `cmd testharness enable` answers, then the phone resets itself through the
        # power-cycle handler; it comes back wiped but still trusting our key.
        dev = await adb_connect(port, adb_host_key)
        assert any(p.startswith("/sdcard/Documents/") for p in phone.user_files())
        _, _, code = await shell_v2(dev, "cmd testharness enable")
        assert code == 0
        await dev.close()
        await wait_for_power_cycles(phone, 2)
        await server.wait_online(within=600)
        assert phone.counters.history == ["reboot", "testharness"]
        assert server.power_cycles == 2
        dev = await adb_connect(port, adb_host_key)
        assert await dev.shell("getprop persist.sys.test_harness") == "1\n"
        assert not any(p.startswith("/sdcard/Documents/") for p in phone.user_files())
        await dev.close()


@pytest.mark.parametrize(("profile", "command", "error"), [
    ("bad-checksum", "getprop ro.product.model", adb_exc.InvalidChecksumError),
    ("bad-malformed", "getprop ro.product.model", adb_exc.InvalidCommandError),
    ("bad-oversized", "getprop ro.product.model", Exception),
    ("bad-disconnect", "getprop ro.product.model", Exception),
    ("bad-hang", "dumpsys battery", Exception),
])
async def test_bench_fault_profiles_are_errors_for_adb_shell(
        profile: str, command: str, error: type[Exception], tmp_path: Path,
        adb_host_key: HostKey) -> None:
    async with SimBench(profiles=[profile], state_dir=tmp_path,
                        clock=Clock(speed=FAST)) as bench:
        dev = await adb_connect(bench.phones[0].port, adb_host_key)
        start = time.monotonic()
        with pytest.raises(error):
            await dev.shell(command, transport_timeout_s=1.0, read_timeout_s=1.0, timeout_s=2.0)
        assert time.monotonic() - start < 5.0
        await dev.close()


async def test_bench_consecutive_ports_and_duplicate_serials(tmp_path: Path) -> None:
    # Find two consecutive free ports (bind both to be sure, then release them).
    for base in range(40000, 60000, 7):
        socks = []
        try:
            for port in (base, base + 1):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        break
    async with SimBench(profiles=["pixel8-clean", "locked"], base_port=base, state_dir=tmp_path,
                        clock=Clock(speed=FAST)) as bench:
        assert [p.port for p in bench.phones] == [base, base + 1]

    with pytest.raises(ConfigError, match="repeats serial"):
        async with SimBench(profiles=["pixel8-clean", "pixel8-clean"], base_port=base,
                            state_dir=tmp_path, clock=Clock(speed=FAST)):
            pass
    # The first phone's server was stopped again.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", base)
    with pytest.raises(ConfigError):
        SimBench(profiles=["pixel8-clean"], base_port=70000, state_dir=tmp_path,
                 clock=Clock(speed=FAST))


async def test_serve_forever_runs_until_cancelled(tmp_path: Path, adb_host_key: HostKey) -> None:
    started: list[SimBench] = []
    ready = asyncio.Event()

    def on_ready(bench: SimBench) -> None:
        started.append(bench)
        ready.set()

    task = asyncio.create_task(serve_forever(["pixel8-clean"], "127.0.0.1", 0, tmp_path,
                                             Clock(speed=FAST), ready=on_ready))
    async with asyncio.timeout(10):
        await ready.wait()
    port = started[0].phones[0].port
    dev = await adb_connect(port, adb_host_key)
    assert await dev.shell("getprop ro.product.model") == "Pixel 8\n"
    await dev.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_bench_unplug_drops_and_refuses_until_plugged(tmp_path: Path,
                                                            adb_host_key: HostKey) -> None:
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path,
                        clock=Clock(speed=FAST)) as bench:
        _, phone, _, port = bench.phones[0]
        dev = await adb_connect(port, adb_host_key)
        bench.unplug(phone.serial)
        with pytest.raises((adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException,
                            ConnectionError)):
            await dev.shell("getprop ro.serialno", read_timeout_s=0.5, transport_timeout_s=0.5)
        await dev.close()
        client = await RawClient.open(port)
        await client.send(A_CNXN, A_VERSION, 4096, b"host::\0")
        assert await client.is_dropped()
        await client.close()
        bench.plug(phone.serial)
        dev = await adb_connect(port, adb_host_key)
        assert await dev.shell("getprop ro.serialno") == phone.serial + "\n"
        await dev.close()
