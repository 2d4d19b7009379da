"""A simulated Android bench: one simulated phone per profile, each behind its own fake
adbd on TCP, all in this process and event loop.

    async with SimBench(profiles=["pixel8-clean", "locked"], host="127.0.0.1", base_port=0,
                        state_dir=tmp, clock=Clock(20)) as bench:
        for profile, phone, host, port in bench.phones:
            ...  # connect adb-shell or Debian's adb to host:port

`serve_forever` is the same bench for the CLI (`wipeagent sim android --listen ...`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError
from wipeagent_sim.adb.server import AdbServer, ServerLimits
from wipeagent_sim.android.phone import SimAndroidPhone
from wipeagent_sim.android.profiles import load_profile

log = logging.getLogger(__name__)

_SHUTDOWN_GRACE = 60.0  # bench seconds for a phone's scheduled power cycles to wind down


class BenchPhone(NamedTuple):
    """One phone on the bench: `profile, phone, host, port = bench.phones[i]`."""

    profile: str
    phone: SimAndroidPhone
    host: str
    port: int


class SimBench:
    """Starts one simulated phone per profile, each with its own `AdbServer`.

    With `base_port` > 0 the phones listen on consecutive ports from `base_port` (in
    profile order); with 0 each gets an ephemeral port. Phone state that must survive a
    restart (authorised ADB keys) lives under `state_dir/<serial>/`.
    """

    def __init__(self, profiles: Sequence[str | Path], host: str = "127.0.0.1",
                 base_port: int = 0, *, state_dir: Path, clock: Clock,
                 limits: ServerLimits | None = None) -> None:
        if not profiles:
            raise ConfigError("a simulated bench needs at least one profile")
        if base_port < 0 or (base_port and base_port + len(profiles) - 1 > 65535):
            raise ConfigError(f"ports {base_port}..{base_port + len(profiles) - 1} are not "
                              "all valid TCP ports")
        self.profiles = list(profiles)
        self.host = host
        self.base_port = base_port
        self.state_dir = state_dir
        self.clock = clock
        self.limits = limits
        self._entries: list[tuple[BenchPhone, AdbServer]] = []

    @property
    def phones(self) -> list[BenchPhone]:
        """The running phones, in profile order (port as actually bound)."""
        return [phone._replace(port=server.port) for phone, server in self._entries]

    def server(self, serial: str) -> AdbServer:
        """The fake adbd of the phone with this serial."""
        for phone, server in self._entries:
            if phone.phone.serial == serial:
                return server
        raise KeyError(serial)

    def phone(self, serial: str) -> SimAndroidPhone:
        """The simulated phone with this serial (for its control methods)."""
        return self.server_entry(serial).phone

    def server_entry(self, serial: str) -> BenchPhone:
        """The bench entry of the phone with this serial."""
        for entry in self.phones:
            if entry.phone.serial == serial:
                return entry
        raise KeyError(serial)

    def unplug(self, serial: str) -> None:
        """Pull the phone's cable: its connections drop and new ones are refused."""
        self.phone(serial).unplug()
        self.server(serial).drop_connections()

    def plug(self, serial: str) -> None:
        """Plug the phone back in."""
        self.phone(serial).plug()

    async def start(self) -> None:
        """Load every profile and start its server; on any failure, stop what started."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index, name in enumerate(self.profiles):
                phone = load_profile(name, state_dir=self.state_dir, clock=self.clock)
                if any(p.phone.serial == phone.serial for p, _ in self._entries):
                    # Two phones with one serial would share ADB key state and confuse the
                    # agent's identity checks; a profile would need its own serial.
                    raise ConfigError(f"profile {name!s} repeats serial {phone.serial} "
                                      "already on this bench")
                port = self.base_port + index if self.base_port else 0
                server = AdbServer(phone, self.host, port, limits=self.limits)
                await server.start()
                label = Path(name).stem if isinstance(name, Path) else str(name)
                self._entries.append((BenchPhone(label, phone, self.host, server.port), server))
                log.info("[Android|%s] profile %s on %s:%d", phone.serial, label, self.host,
                         server.port)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every server, then let the phones' scheduled power cycles wind down."""
        entries, self._entries = self._entries, []
        for _, server in reversed(entries):
            await server.close()
        for entry, _ in entries:
            with contextlib.suppress(TimeoutError):
                await self.clock.wait_for(entry.phone.wait_power_cycles(), _SHUTDOWN_GRACE)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def _print_ready(bench: SimBench) -> None:
    for profile, phone, host, port in bench.phones:
        print(f"android  {phone.serial:<20} {profile:<20} adb on {host}:{port}", flush=True)


async def serve_forever(profiles: Sequence[str | Path], host: str, base_port: int,
                        state_dir: Path, clock: Clock, *,
                        ready: Callable[[SimBench], None] | None = _print_ready) -> None:
    """Run a simulated bench until cancelled (the CLI's `wipeagent sim android`).

    `ready` is called once every phone listens (default: print one line per phone with
    its serial, profile and address)."""
    async with SimBench(profiles, host, base_port, state_dir=state_dir, clock=clock) as bench:
        if ready is not None:
            ready(bench)
        await asyncio.Event().wait()
