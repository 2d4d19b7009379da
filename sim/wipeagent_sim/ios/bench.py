"""A simulated iOS bench: N phones behind one fake usbmuxd, in-process or as a server.

In tests::

    async with SimIosBench(["clean", "findmy_on"], clock=Clock(speed=50)) as bench:
        os.environ["USBMUXD_SOCKET_ADDRESS"] = bench.address
        ...  # pymobiledevice3 / ideviceinfo talk to bench.phones
        bench.trust(udid); bench.unplug(udid); bench.plug(udid)

For the CLI (``wipeagent sim ios --listen 127.0.0.1:PORT [--socket PATH] --profile NAME``):
`serve_forever`; and ``wipeagent sim ios trust UDID``: `remote_control`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError
from wipeagent_sim.ios.phone import SimIPhone
from wipeagent_sim.ios.profile import load_profile
from wipeagent_sim.ios.usbmuxd import FakeUsbmuxd, send_control

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhoneSpec:
    """One phone on the bench: a profile name (or TOML path) and an optional fixed UDID."""

    profile: str | Path
    udid: str | None = None
    # The USB port path it is plugged into ("3-1.2"); default: the next free one.
    port: str | None = None


class SimIosBench:
    """Simulated iPhones on one fake usbmuxd (TCP, and a unix socket if asked)."""

    def __init__(
        self,
        phones: Sequence[str | Path | PhoneSpec],
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        socket_path: str | None = None,
        pair_record_dir: Path | None = None,
        sysfs_root: Path | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self._specs = [p if isinstance(p, PhoneSpec) else PhoneSpec(p) for p in phones]
        self._host = host
        self._port = port
        self.socket_path = socket_path
        self.sysfs_root = sysfs_root
        self.usbmuxd = FakeUsbmuxd(self.clock, pair_record_dir=pair_record_dir,
                                   sysfs_root=sysfs_root)
        self.phones: list[SimIPhone] = []
        self.tcp_address: tuple[str, int] | None = None

    @property
    def address(self) -> str:
        """``host:port`` for USBMUXD_SOCKET_ADDRESS (pymobiledevice3 and libusbmuxd)."""
        if self.tcp_address is None:
            raise RuntimeError("bench not started")
        return f"{self.tcp_address[0]}:{self.tcp_address[1]}"

    async def start(self) -> None:
        """Create the phones and start listening."""
        profiles = [load_profile(spec.profile) for spec in self._specs]
        seen: set[str] = set()
        for index, (spec, profile) in enumerate(zip(self._specs, profiles, strict=True)):
            phone = await SimIPhone.create(profile, self.clock, udid=spec.udid, seed=str(index))
            if phone.udid in seen:
                raise ConfigError(f"two simulated iPhones share the UDID {phone.udid}")
            seen.add(phone.udid)
            self.phones.append(phone)
        self.tcp_address = await self.usbmuxd.start_tcp(self._host, self._port)
        if self.socket_path:
            await self.usbmuxd.start_unix(self.socket_path)
        for spec, phone in zip(self._specs, self.phones, strict=True):
            self.usbmuxd.add_phone(phone, spec.port)

    async def close(self) -> None:
        """Stop the phones and the daemon."""
        await self.usbmuxd.close()
        for phone in self.phones:
            await phone.close()

    async def __aenter__(self) -> SimIosBench:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def phone(self, udid: str) -> SimIPhone:
        """The phone with this UDID (KeyError if none)."""
        for phone in self.phones:
            if phone.udid == udid:
                return phone
        raise KeyError(udid)

    def trust(self, udid: str) -> None:
        """The person taps Trust (now, or on the next prompt)."""
        self.phone(udid).trust()

    def deny(self, udid: str) -> None:
        """The person taps Don't Trust."""
        self.phone(udid).deny()

    def unlock(self, udid: str) -> None:
        """The person enters the passcode."""
        self.phone(udid).unlock()

    def unplug(self, udid: str) -> None:
        """Pull the phone's cable (usbmuxd reports Detached, connections drop)."""
        self.phone(udid).unplug()

    def plug(self, udid: str) -> None:
        """Plug the phone back in (Attached with a new DeviceID)."""
        self.phone(udid).plug()

    async def wait_visible(self, udid: str, visible: bool, within: float) -> None:
        """Wait (bench seconds) until the phone is / is not on the bus."""
        phone = self.phone(udid)
        async with self.clock.timeout(within):
            while phone.visible != visible:
                await self.clock.sleep(0.25)


async def serve_forever(
    profiles: Sequence[str | Path | PhoneSpec],
    *,
    listen: str = "127.0.0.1:27015",
    socket_path: str | None = None,
    speed: float = 1.0,
    pair_record_dir: Path | None = None,
    ready: Callable[[SimIosBench], None] | None = None,
) -> None:
    """Run a simulated bench until cancelled (the CLI's ``wipeagent sim ios``).

    `listen` is ``host:port`` (port 0 picks one; `ready` is called with the started bench,
    e.g. to print ``bench.address`` and the UDIDs).
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen must be HOST:PORT, got {listen!r}")
    bench = SimIosBench(
        profiles,
        clock=Clock(speed),
        host=host or "127.0.0.1",
        port=int(port_text),
        socket_path=socket_path,
        pair_record_dir=pair_record_dir,
    )
    async with bench:
        if ready is not None:
            ready(bench)
        log.info("simulated iOS bench on %s: %s", bench.address, [p.udid for p in bench.phones])
        await asyncio.Event().wait()


async def remote_control(address: str, action: str, udid: str) -> None:
    """Act on a phone of a running `serve_forever` bench from another process.

    ``wipeagent sim ios trust UDID`` is ``remote_control(address, "trust", udid)``;
    actions: trust, deny, unlock, unplug, plug. LookupError if no such phone.
    """
    await send_control(address, action, udid)
