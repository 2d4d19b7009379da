"""The fake adbd against Debian's real `adb` client (platform-tools 29).

Each test runs a private adb server (ANDROID_ADB_SERVER_PORT on a free port, HOME in a
temp dir so adb makes its own ~/.android/adbkey) and kills it afterwards. Every adb call
is asynchronous (the simulator runs in this event loop) and has a timeout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from adb_fixtures import MODEL, KeyListingTinyPhone

from wipeagent.clock import Clock
from wipeagent_sim.adb.server import AdbServer
from wipeagent_sim.android.bench import SimBench

ADB = shutil.which("adb")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(ADB is None, reason="Debian's adb client is not installed"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Adb:
    """Runs the real adb client against one simulated phone."""

    env: dict[str, str]
    serial: str

    async def run(self, *args: str, limit: float = 15.0) -> tuple[int, str, str]:
        assert ADB is not None
        proc = await asyncio.create_subprocess_exec(
            ADB,
            *args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"adb {' '.join(args)} did not finish within {limit}s")
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def device(self, *args: str, limit: float = 15.0) -> tuple[int, str, str]:
        return await self.run("-s", self.serial, *args, limit=limit)

    async def connect(self) -> None:
        """`adb connect`, then wait until the device is online (auth done)."""
        await self.run("connect", self.serial)
        for _ in range(100):
            code, out, _ = await self.device("get-state", limit=5.0)
            if code == 0 and out.strip() == "device":
                return
            await asyncio.sleep(0.1)
        pytest.fail("the simulated phone never came online in adb")


@pytest.fixture
async def phone_and_server() -> AsyncIterator[tuple[KeyListingTinyPhone, AdbServer]]:
    phone = KeyListingTinyPhone()
    async with AdbServer(phone, "127.0.0.1", 0) as server:
        yield phone, server


@pytest.fixture
async def adb(
    tmp_path: Path, phone_and_server: tuple[KeyListingTinyPhone, AdbServer]
) -> AsyncIterator[Adb]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANDROID_ADB_SERVER_PORT": str(_free_port()),
    }
    client = Adb(env=env, serial=f"127.0.0.1:{phone_and_server[1].port}")
    try:
        yield client
    finally:
        await client.run("kill-server", limit=10.0)


async def test_adb_auth_shell_exit_codes_push_pull(
    adb: Adb, phone_and_server: tuple[KeyListingTinyPhone, AdbServer], tmp_path: Path
) -> None:
    phone, _ = phone_and_server
    await adb.connect()
    # First contact went through RSAPUBLICKEY with the key adb generated in our HOME.
    pub = (Path(adb.env["HOME"]) / ".android" / "adbkey.pub").read_bytes().split()[0]
    assert [p.split()[0] for p in phone.prompts] == [pub]

    assert await adb.device("shell", "getprop", "ro.product.model") == (0, MODEL + "\n", "")
    code, _, _ = await adb.device("shell", "false")
    assert code == 1  # exit status travels through shell protocol v2
    code, out, err = await adb.device("shell", "fail", "7", "broken", "pipe")
    assert (code, out, err) == (7, "partial\n", "broken pipe\n")

    payload = os.urandom(300_000)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    code, _, err = await adb.device("push", str(src), "/sdcard/Download/src.bin")
    assert code == 0, err
    assert phone.files["/sdcard/Download/src.bin"][0] == payload
    dst = tmp_path / "dst.bin"
    code, _, err = await adb.device("pull", "/sdcard/Download/src.bin", str(dst))
    assert code == 0, err
    assert dst.read_bytes() == payload
    code, out, _ = await adb.device("ls", "/sdcard/Download")
    assert code == 0
    assert out.split() == ["000081a4", f"{len(payload):08x}", out.split()[2], "src.bin"]
    code, out, err = await adb.device("pull", "/sdcard/missing", str(tmp_path / "x"))
    assert code != 0 and "No such file" in out + err

    # A new adb server (same key) is let in by signature: nobody is asked again.
    await adb.run("kill-server", limit=10.0)
    await adb.connect()
    assert len(phone.prompts) == 1
    assert await adb.device("shell", "echo", "again") == (0, "again\n", "")


async def test_adb_reboot_goes_offline_and_comes_back(
    adb: Adb, phone_and_server: tuple[KeyListingTinyPhone, AdbServer]
) -> None:
    phone, server = phone_and_server
    phone.reboot_gate = asyncio.Event()
    await adb.connect()
    code, _, err = await adb.device("reboot")
    assert code == 0, err
    await asyncio.sleep(0.3)
    assert phone.reboots == [""]
    assert not server.online
    code, _, _ = await adb.device("shell", "echo", "x", limit=10.0)
    assert code != 0  # offline while "rebooting"

    phone.reboot_gate.set()
    await server.wait_online(within=1000)
    # adb 29 retries a lost TCP device only every 10 s; reconnect by hand to stay fast.
    await adb.run("disconnect", adb.serial)
    await adb.connect()
    assert await adb.device("shell", "echo", "back") == (0, "back\n", "")
    assert server.power_cycles == 1


async def test_adb_against_the_real_simulated_phone(tmp_path: Path) -> None:
    clock = Clock(speed=100)
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path / "state",
                        clock=clock) as bench:
        home = tmp_path / "home"
        home.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "ANDROID_ADB_SERVER_PORT": str(_free_port()),
        }
        _, phone, host, port = bench.phones[0]
        adb = Adb(env=env, serial=f"{host}:{port}")
        try:
            await adb.connect()
            assert await adb.device("shell", "getprop", "ro.product.model") == (0, "Pixel 8\n", "")
            code, _, _ = await adb.device("shell", "false")
            assert code == 1
            code, out, err = await adb.device("shell", "cat", "/sdcard/nope")
            assert (code, out) == (1, "")
            assert "No such file or directory" in err

            payload = os.urandom(100_000)
            src = tmp_path / "src.bin"
            src.write_bytes(payload)
            code, _, err = await adb.device("push", str(src), "/sdcard/Download/src.bin")
            assert code == 0, err
            assert phone.user_files()["/sdcard/Download/src.bin"] == payload
            dst = tmp_path / "dst.bin"
            code, _, err = await adb.device("pull", "/sdcard/Documents/notes.txt", str(dst))
            assert code == 0, err
            assert dst.read_bytes() == phone.user_files()["/sdcard/Documents/notes.txt"]
        finally:
            await adb.run("kill-server", limit=10.0)
