"""Test helpers for the fake adbd: `TinyPhone`, a small in-memory phone implementing
`AdbDeviceBackend` (the real simulated phone lives in sim/wipeagent_sim/android), and host
keys made with adb-shell's own keygen."""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass, field
from pathlib import Path

from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner

from wipeagent.clock import Clock
from wipeagent_sim.adb.backend import FileStat, PowerCycleHandler, ShellResult
from wipeagent_sim.adb.server import SUPPORTED_FEATURES

MODEL = "Tiny Phone"


@dataclass
class TinyPhone:
    """A phone with a dict file system and a handful of shell commands."""

    serial: str = "TINY0001"
    clock: Clock = field(default_factory=lambda: Clock(speed=50))
    enabled: bool = True
    accept_prompt: bool | None = True  # None: the person never answers
    authorised: set[bytes] = field(default_factory=set)
    faults: dict[str, str] = field(default_factory=dict)  # service prefix -> fault
    files: dict[str, tuple[bytes, int, int]] = field(default_factory=dict)
    reboot_gate: asyncio.Event | None = None  # finish_power_cycle waits for it if set
    prompts: list[bytes] = field(default_factory=list)
    reboots: list[str] = field(default_factory=list)
    power_cycles_finished: int = 0
    handler: PowerCycleHandler | None = None

    def banner(self) -> bytes:
        return (
            b"device::ro.product.name=tiny;ro.product.model="
            + MODEL.encode()
            + b";ro.product.device=tiny;features="
            + ",".join(SUPPORTED_FEATURES).encode()
        )

    def adb_enabled(self) -> bool:
        return self.enabled

    def is_key_authorised(self, android_pubkey: bytes) -> bool:
        return android_pubkey in self.authorised

    async def ask_user_to_authorise(self, android_pubkey: bytes) -> bool:
        self.prompts.append(android_pubkey)
        if self.accept_prompt is None:
            await asyncio.Event().wait()
        if self.accept_prompt:
            self.authorised.add(android_pubkey)
            return True
        return False

    async def shell(self, command: str) -> ShellResult:
        await asyncio.sleep(0)
        words = command.split()
        if command == "getprop ro.product.model":
            return ShellResult(stdout=MODEL.encode() + b"\n")
        if words[0] == "echo":
            return ShellResult(stdout=" ".join(words[1:]).encode() + b"\n")
        if words[0] == "true":
            return ShellResult()
        if words[0] == "false":
            return ShellResult(exit_code=1)
        if words[0] == "fail":  # fail CODE MESSAGE...
            return ShellResult(
                stdout=b"partial\n",
                stderr=" ".join(words[2:]).encode() + b"\n",
                exit_code=int(words[1]),
            )
        if words[0] == "big":  # big N: N bytes of a recognisable pattern
            size = int(words[1])
            pattern = bytes(range(256))
            return ShellResult(stdout=(pattern * (size // 256 + 1))[:size])
        if words[0] == "sleep":
            await self.clock.sleep(float(words[1]))
            return ShellResult(stdout=b"slept\n")
        return ShellResult(
            stderr=f"/system/bin/sh: {words[0]}: inaccessible or not found\n".encode(),
            exit_code=127,
        )

    def stat(self, path: str) -> FileStat | None:
        if path in self.files:
            data, mode, mtime = self.files[path]
            return FileStat(mode=mode, size=len(data), mtime=mtime)
        if self._is_dir(path):
            return FileStat(mode=stat.S_IFDIR | 0o771, size=4096, mtime=1_700_000_000)
        return None

    def _is_dir(self, path: str) -> bool:
        prefix = path.rstrip("/") + "/"
        return path in ("/", "/sdcard") or any(p.startswith(prefix) for p in self.files)

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None:
        if not self._is_dir(path):
            return None
        prefix = path.rstrip("/") + "/"
        names = sorted({p[len(prefix) :].split("/")[0] for p in self.files if p.startswith(prefix)})
        out = []
        for name in names:
            st = self.stat(prefix + name)
            assert st is not None
            out.append((name, st))
        return out

    def read_file(self, path: str) -> bytes | None:
        entry = self.files.get(path)
        return None if entry is None else entry[0]

    def write_file(self, path: str, data: bytes, mode: int, mtime: int) -> str | None:
        if path.startswith("/system/"):
            return f"{path}: Read-only file system"
        self.files[path] = (data, mode, mtime)
        return None

    def protocol_fault(self, service: str) -> str | None:
        for prefix, fault in self.faults.items():
            if service.startswith(prefix):
                return fault
        return None

    def set_power_cycle_handler(self, handler: PowerCycleHandler) -> None:
        self.handler = handler

    async def request_reboot(self, target: str) -> None:
        self.reboots.append(target)
        assert self.handler is not None
        await self.handler()

    async def finish_power_cycle(self) -> None:
        await self.clock.sleep(1.0)
        if self.reboot_gate is not None:
            await self.reboot_gate.wait()
        self.power_cycles_finished += 1


@dataclass(frozen=True)
class HostKey:
    """An adb host key pair made by adb-shell's own keygen."""

    path: Path
    signer: PythonRSASigner

    @property
    def pubkey(self) -> bytes:
        """The RSAPUBLICKEY message the client sends (base64 + ' user@host')."""
        return self.path.with_suffix(".pub").read_bytes().strip()


def make_key(directory: Path, name: str) -> HostKey:
    path = directory / name
    keygen(str(path))
    signer = PythonRSASigner.FromRSAKeyPath(str(path))
    return HostKey(path=path, signer=signer)


class KeyListingTinyPhone(TinyPhone):
    """A TinyPhone that also lists its adb_keys (the server's optional extension), so
    keys authorised before the server started pass the SIGNATURE step."""

    def authorised_keys(self) -> list[bytes]:
        return sorted(self.authorised)
