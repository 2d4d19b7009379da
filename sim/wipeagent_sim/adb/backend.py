"""The contract between the fake adbd (protocol) and a simulated phone (behaviour).

The protocol server in `wipeagent_sim.adb.server` knows bytes; the phone in
`wipeagent_sim.android.phone` knows state. The server calls only what is declared here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from wipeagent.clock import Clock


@dataclass(frozen=True)
class ShellResult:
    """What a shell command produced; `exit_code` as `sh` would report it."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0


@dataclass(frozen=True)
class FileStat:
    """A file's metadata as `sync:` STAT reports it (mode includes the file type bits)."""

    mode: int
    size: int
    mtime: int


# The server registers this with the phone. The phone calls it when it is about to power
# cycle (reboot, factory reset): the server must drop every connection, stop answering
# for the duration, then call `phone.finish_power_cycle()` and listen again. The server's
# handler goes offline before its first `await` and returns only once it listens again, so
# "the handler returned" means "the phone has booted". A backend may also offer
# `authorised_keys()` (see server.ListsAuthorisedKeys): SIGNATURE packets carry no key, so
# the server needs the list to accept a returning host without asking the person again.
PowerCycleHandler = Callable[[], Awaitable[None]]


class AdbDeviceBackend(Protocol):
    """A simulated phone as the fake adbd sees it."""

    serial: str
    clock: Clock

    def banner(self) -> bytes:
        """The CNXN banner: b"device::ro.product.name=..;ro.product.model=..;
        ro.product.device=..;features=shell_v2,cmd,stat_v2,..." """
        ...

    def adb_enabled(self) -> bool:
        """False while USB debugging is off (e.g. after a normal factory reset)."""
        ...

    def is_key_authorised(self, android_pubkey: bytes) -> bool:
        """Is this RSAPUBLICKEY (Android format, base64 + ' user@host') authorised?"""
        ...

    async def ask_user_to_authorise(self, android_pubkey: bytes) -> bool:
        """Show "Allow USB debugging?" and wait for the (simulated) person.

        Returns True if accepted (the key is then authorised and persisted). May wait
        forever (the client times out) or refuse at once, depending on the profile."""
        ...

    async def shell(self, command: str) -> ShellResult:
        """Run one non-interactive shell command line."""
        ...

    def stat(self, path: str) -> FileStat | None:
        """None if the path does not exist (or is not visible to the shell user)."""
        ...

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None:
        """Entries of a directory, or None if it is not a readable directory."""
        ...

    def read_file(self, path: str) -> bytes | None:
        """A regular file's contents, or None if missing or unreadable."""
        ...

    def write_file(self, path: str, data: bytes, mode: int, mtime: int) -> str | None:
        """Store a file; returns None on success or an error message (e.g. read-only)."""
        ...

    def protocol_fault(self, service: str) -> str | None:
        """A fault the *server* must inject while serving `service` (e.g. "shell:getprop"),
        from the profile's fault plan, or None. Known faults: "malformed_packet" (a packet
        whose magic is wrong), "wrong_checksum", "oversized_payload" (a WRTE larger than
        the negotiated maxdata), "hang" (never answer), "disconnect" (drop the TCP
        connection mid-stream). Phone-level faults (invalid UTF-8, metacharacters in
        property values) are just data in the profile and come back through `shell`."""
        ...

    def set_power_cycle_handler(self, handler: PowerCycleHandler) -> None:
        """Register the server's handler (see PowerCycleHandler)."""
        ...

    async def request_reboot(self, target: str) -> None:
        """`reboot:` / `reboot:TARGET` service. Triggers the power-cycle handler."""
        ...

    async def finish_power_cycle(self) -> None:
        """Sleep the profile's reboot time (via self.clock) and apply what the reboot does
        (a factory reset wipes user state). Called by the server while it is offline."""
        ...
