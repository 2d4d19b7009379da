"""A tiny in-test phone for the fake adbd (wipeagent_sim.adb.server.AdbServer).

It implements the AdbDeviceBackend contract with a command table, so the transport's
tests control exactly what the phone answers and which protocol fault it injects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from wipeagent.clock import Clock
from wipeagent_sim.adb.backend import FileStat, PowerCycleHandler, ShellResult

FAST = 50.0  # bench seconds per real second in these tests


@dataclass
class TablePhone:
    """Answers shell commands from `commands`; authorisation per `auth` mode."""

    clock: Clock
    serial: str = "TEST0001"
    features: str = "shell_v2,cmd,stat_v2,ls_v2"
    auth: str = "accept"  # accept | refuse | wait
    commands: dict[str, ShellResult] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    keys: set[bytes] = field(default_factory=set)
    prompts: int = 0
    handler: PowerCycleHandler | None = None

    def banner(self) -> bytes:
        return (b"device::ro.product.name=test;ro.product.model=Test;ro.product.device=test;"
                b"features=" + self.features.encode())

    def adb_enabled(self) -> bool:
        return True

    def is_key_authorised(self, android_pubkey: bytes) -> bool:
        return android_pubkey.strip() in self.keys

    def authorised_keys(self) -> list[bytes]:
        return sorted(self.keys)

    async def ask_user_to_authorise(self, android_pubkey: bytes) -> bool:
        self.prompts += 1
        if self.auth == "accept":
            await self.clock.sleep(1.0)
            self.keys.add(android_pubkey.strip())
            return True
        if self.auth == "wait":
            await asyncio.Event().wait()
        return False

    async def shell(self, command: str) -> ShellResult:
        if command in self.commands:
            return self.commands[command]
        if command.startswith("echo "):
            return ShellResult(stdout=command[5:].encode() + b"\n")
        name = command.split(maxsplit=1)[0]
        return ShellResult(stderr=f"/system/bin/sh: {name}: inaccessible or not found\n"
                           .encode(), exit_code=127)

    def stat(self, path: str) -> FileStat | None:
        data = self.files.get(path)
        return None if data is None else FileStat(0o100644, len(data), 0)

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None:
        return None

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, path: str, data: bytes, mode: int, mtime: int) -> str | None:
        self.files[path] = data
        return None

    def protocol_fault(self, service: str) -> str | None:
        for prefix, fault in self.faults.items():
            if service.startswith(prefix):
                return fault
        return None

    def set_power_cycle_handler(self, handler: PowerCycleHandler) -> None:
        self.handler = handler

    async def request_reboot(self, target: str) -> None:
        assert self.handler is not None
        await self.handler()

    async def finish_power_cycle(self) -> None:
        await self.clock.sleep(5.0)
