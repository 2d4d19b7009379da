"""The ADB transport against the fake adbd (real adb-shell client, real TCP)."""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

import pytest
from table_phone import TablePhone

from wipeagent.clock import Clock
from wipeagent.errors import (
    ConfigError,
    DeviceGone,
    DeviceTimeout,
    NotAuthorised,
    ProtocolError,
)
from wipeagent.transports.adb import (
    AdbEndpoint,
    AdbHostKey,
    ShellV2Decoder,
    _GuardedTcpTransport,
    connect_adb,
    parse_banner_features,
)
from wipeagent_sim.adb.backend import ShellResult

# ---------------------------------------------------------------- pure parts


def test_endpoint_parse() -> None:
    assert AdbEndpoint.parse("127.0.0.1:5037") == AdbEndpoint("127.0.0.1", 5037)
    assert AdbEndpoint.parse("phone.local") == AdbEndpoint("phone.local", 5555)
    assert AdbEndpoint.parse("[::1]:6000") == AdbEndpoint("::1", 6000)
    assert str(AdbEndpoint("::1", 6000)) == "[::1]:6000"
    for bad in ("host:port", "host:0", "a b:1", "host:99999", "[::1"):
        with pytest.raises(ConfigError):
            AdbEndpoint.parse(bad)


def test_host_key_created_private_and_reloaded(key_dir: Path) -> None:
    key = AdbHostKey.load_or_create(key_dir / "adbkey")
    assert stat.S_IMODE(os.stat(key_dir / "adbkey").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_dir).st_mode) == 0o700
    assert (key_dir / "adbkey.pub").exists()
    again = AdbHostKey.load_or_create(key_dir / "adbkey")
    assert again.public_key == key.public_key
    # No temporary files left behind.
    assert sorted(p.name for p in key_dir.iterdir()) == ["adbkey", "adbkey.pub"]


def test_host_key_with_loose_permissions_refused(key_dir: Path) -> None:
    AdbHostKey.load_or_create(key_dir / "adbkey")
    (key_dir / "adbkey").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        AdbHostKey.load_or_create(key_dir / "adbkey")
    assert "chmod 600" in info.value.hint


def test_host_key_not_a_key_refused(key_dir: Path) -> None:
    key_dir.mkdir(mode=0o700)
    (key_dir / "adbkey").write_text("not a key")
    (key_dir / "adbkey").chmod(0o600)
    with pytest.raises(ConfigError, match="not a PEM RSA key"):
        AdbHostKey.load_or_create(key_dir / "adbkey")


def v2(ident: int, data: bytes) -> bytes:
    return struct.pack("<BI", ident, len(data)) + data


def test_shell_v2_decoder_split_anywhere() -> None:
    stream = v2(1, b"hello ") + v2(2, b"oops") + v2(1, b"world") + v2(3, b"\x02")
    for cut in range(len(stream)):
        dec = ShellV2Decoder(1000)
        dec.feed(stream[:cut])
        dec.feed(stream[cut:])
        out = dec.finish()
        assert (out.stdout, out.stderr, out.exit_code) == (b"hello world", b"oops", 2)


def test_shell_v2_decoder_rejects_bad_streams() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        ShellV2Decoder(10).feed(v2(1, b"x" * 11))
    # The announced length alone is enough to refuse: no buffering of a huge packet.
    with pytest.raises(ProtocolError, match="exceeds"):
        ShellV2Decoder(10).feed(struct.pack("<BI", 1, 1 << 31))
    with pytest.raises(ProtocolError, match="packet id"):
        ShellV2Decoder(10).feed(v2(9, b""))
    with pytest.raises(ProtocolError, match="exit packet"):
        ShellV2Decoder(10).feed(v2(3, b"\x00\x00"))
    with pytest.raises(ProtocolError, match="after the exit"):
        ShellV2Decoder(10).feed(v2(3, b"\x00") + v2(1, b"x"))
    dec = ShellV2Decoder(10)
    dec.feed(v2(1, b"x"))
    with pytest.raises(ProtocolError, match="without an exit"):
        dec.finish()


def test_banner_features() -> None:
    assert parse_banner_features(b"device::ro.product.name=x;features=shell_v2,cmd\0") == {
        "shell_v2", "cmd"}
    assert parse_banner_features(b"device::ro.product.name=x;") == frozenset()
    assert parse_banner_features(b"device::features=\xff") == frozenset()


def test_guarded_transport_checks_headers() -> None:
    t = _GuardedTcpTransport("127.0.0.1", 1)
    cnxn = int.from_bytes(b"CNXN", "little")
    wrte = int.from_bytes(b"WRTE", "little")
    with pytest.raises(ProtocolError, match="magic"):
        t._inspect(struct.pack("<6I", wrte, 1, 2, 0, 0, 0))
    t = _GuardedTcpTransport("127.0.0.1", 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        t._inspect(struct.pack("<6I", wrte, 1, 2, 1 << 30, 0, wrte ^ 0xFFFFFFFF))
    # CNXN negotiates the limit and its banner is captured, even split byte by byte.
    t = _GuardedTcpTransport("127.0.0.1", 1)
    banner = b"device::features=shell_v2"
    for b in struct.pack("<6I", cnxn, 0x01000000, 4096, len(banner), 0,
                         cnxn ^ 0xFFFFFFFF) + banner:
        t._inspect(bytes([b]))
    assert t.banner == banner and t.max_payload == 4096
    with pytest.raises(ProtocolError, match="exceeds"):
        t._inspect(struct.pack("<6I", wrte, 1, 2, 4097, 0, wrte ^ 0xFFFFFFFF))


# ---------------------------------------------------------------- against the fake adbd


async def test_auth_prompt_then_signature(endpoint: AdbEndpoint, phone: TablePhone,
                                          host_key: AdbHostKey, clock: Clock) -> None:
    conn = await connect_adb(endpoint, host_key, clock, connect_timeout_s=10,
                             auth_timeout_s=30)
    assert phone.prompts == 1 and "shell_v2" in conn.banner_features()
    await conn.close()
    conn = await connect_adb(endpoint, host_key, clock, auth_timeout_s=30)
    assert phone.prompts == 1  # the key is now known: signature path, no prompt
    await conn.close()


@pytest.mark.parametrize("mode", ["refuse", "wait"])
async def test_auth_refused_or_ignored(endpoint: AdbEndpoint, phone: TablePhone,
                                       host_key: AdbHostKey, clock: Clock, mode: str) -> None:
    phone.auth = mode
    with pytest.raises(NotAuthorised) as info:
        await connect_adb(endpoint, host_key, clock, connect_timeout_s=5, auth_timeout_s=10)
    assert "Allow" in info.value.hint
    assert phone.prompts == 1


async def test_shell_v2_exit_codes(endpoint: AdbEndpoint, phone: TablePhone,
                                   host_key: AdbHostKey, clock: Clock) -> None:
    phone.commands["failing"] = ShellResult(b"out\n", b"err\n", 3)
    conn = await connect_adb(endpoint, host_key, clock)
    out = await conn.shell("failing", timeout_s=10, max_output_bytes=1000)
    assert (out.stdout, out.stderr, out.exit_code) == (b"out\n", b"err\n", 3)
    out = await conn.shell("nosuch", timeout_s=10, max_output_bytes=1000)
    assert out.exit_code == 127 and b"inaccessible or not found" in out.stderr
    await conn.close()


async def test_shell_v1_fallback(endpoint: AdbEndpoint, phone: TablePhone,
                                 host_key: AdbHostKey, clock: Clock) -> None:
    phone.features = "cmd"
    phone.commands["failing"] = ShellResult(b"out\n", b"err\n", 3)
    conn = await connect_adb(endpoint, host_key, clock)
    out = await conn.shell("failing", timeout_s=10, max_output_bytes=1000)
    assert (out.stdout, out.stderr, out.exit_code) == (b"out\nerr\n", b"", None)
    await conn.close()


@pytest.mark.parametrize("features", ["shell_v2,cmd", "cmd"])
async def test_big_output_spans_packets_and_is_bounded(
        endpoint: AdbEndpoint, phone: TablePhone, host_key: AdbHostKey, clock: Clock,
        features: str) -> None:
    phone.features = features
    phone.commands["big"] = ShellResult(b"y" * 600_000)
    conn = await connect_adb(endpoint, host_key, clock)
    out = await conn.shell("big", timeout_s=30, max_output_bytes=1_000_000)
    assert out.stdout == b"y" * 600_000
    with pytest.raises(ProtocolError, match="exceeds"):
        await conn.shell("big", timeout_s=30, max_output_bytes=100_000)
    assert conn.closed  # the stream state is unknown after an abort: reconnect
    with pytest.raises(DeviceGone):
        await conn.shell("echo hi", timeout_s=5, max_output_bytes=100)


@pytest.mark.parametrize(
    ("fault", "error"),
    [("hang", DeviceTimeout), ("wrong_checksum", ProtocolError),
     ("malformed_packet", ProtocolError), ("oversized_payload", ProtocolError),
     ("disconnect", DeviceGone)],
)
async def test_protocol_faults(endpoint: AdbEndpoint, phone: TablePhone, host_key: AdbHostKey,
                               clock: Clock, fault: str, error: type[Exception]) -> None:
    phone.faults["shell,v2,raw:getprop"] = fault
    conn = await connect_adb(endpoint, host_key, clock)
    assert (await conn.shell("echo ok", timeout_s=5, max_output_bytes=100)).stdout == b"ok\n"
    with pytest.raises(error):
        await conn.shell("getprop", timeout_s=5, max_output_bytes=100_000)
    assert conn.closed
    await conn.close()


async def test_push_pull(endpoint: AdbEndpoint, phone: TablePhone, host_key: AdbHostKey,
                         clock: Clock) -> None:
    conn = await connect_adb(endpoint, host_key, clock)
    await conn.push(b"canary\n", "/data/local/tmp/x", timeout_s=10)
    assert phone.files["/data/local/tmp/x"] == b"canary\n"
    assert await conn.pull("/data/local/tmp/x", timeout_s=10) == b"canary\n"
    phone.files["/sdcard/big"] = b"z" * 200_000
    with pytest.raises(ProtocolError, match="exceeds"):
        await conn.pull("/sdcard/big", timeout_s=10, max_bytes=1000)
    await conn.close()


async def test_nothing_listening_is_device_gone(host_key: AdbHostKey, clock: Clock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceGone):
        await connect_adb(AdbEndpoint("127.0.0.1", port), host_key, clock,
                          connect_timeout_s=5)


async def test_silent_listener_is_timeout(host_key: AdbHostKey, clock: Clock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DeviceTimeout):
            await connect_adb(AdbEndpoint("127.0.0.1", port), host_key, clock,
                              connect_timeout_s=5, auth_timeout_s=5)
