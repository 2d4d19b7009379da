"""Coldplug and hotplug of phones on the bench's USB ports, with event folding.

How it works (and why):
- udev events are only triggers. Each one marks its port (`1-3.2`; interface events
  `1-3.2:1.0` mark their device's port) as dirty. When a port has been quiet for the fold
  window (or has been busy for `max_fold` seconds), its device is read again from sysfs and
  classified, and the result is compared with what was last reported for that port. So
  duplicate adds, add/remove blips and the device-before-interfaces race of a fresh
  enumeration all fold into the one change that matters, and no event is trusted for data.
- The netlink monitor's socket is added to the asyncio loop (`loop.add_reader`): no
  polling, no threads. If the kernel drops events (ENOBUFS on a 64-phone burst), every
  known and present port is re-read, so nothing is missed for long.
- A phone is recognised across re-plugs and moves by its serial (Apple recovery/DFU: its
  ECID); a different serial on the same port is a remove plus an add, never a change.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import pyudev
from pydantic import ValidationError

from wipeagent.clock import Clock
from wipeagent.errors import WipeAgentError
from wipeagent.usb.classify import classify, read_device
from wipeagent.usb.ids import UsbIds, load_ids
from wipeagent.usb.model import DeviceEvent, EventAction, UsbPhone
from wipeagent.usb.slots import SlotMap, is_port_path

log = logging.getLogger(__name__)

_DRAIN_PER_WAKEUP = 512  # udev events handled per loop wake-up, so one burst cannot starve it
_RECEIVE_BUFFER = 16 * 1024 * 1024  # honoured only with CAP_NET_ADMIN; ENOBUFS is handled anyway


@dataclass
class _Pending:
    first: float
    last: float


class UsbWatcher:
    """Finds phones on USB: `snapshot()` for what is there, `events()` for what changes.

    `slots` maps port paths to bench slot labels (unmapped ports get `usb-<path>`).
    `fold_window`: bench seconds a port must be quiet before its state is reported.
    `max_fold`: a port that keeps flapping is reported after this many bench seconds anyway.
    """

    def __init__(
        self,
        clock: Clock,
        slots: SlotMap | Mapping[str, str] | None = None,
        *,
        fold_window: float = 2.0,
        max_fold: float = 10.0,
        use_libusb: bool = True,
        context: pyudev.Context | None = None,
        ids: UsbIds | None = None,
        remember: int = 4096,
    ) -> None:
        if not fold_window >= 0 or not max_fold >= fold_window:
            raise ValueError("need 0 <= fold_window <= max_fold")
        self.clock = clock
        self.slots = SlotMap.coerce(slots)
        self.fold_window = fold_window
        self.max_fold = max_fold
        self.use_libusb = use_libusb
        self._context = context or pyudev.Context()
        self._ids = ids or load_ids()
        self._remember = remember
        self._reported: dict[str, UsbPhone] = {}
        self._seen: OrderedDict[str, tuple[str, str]] = OrderedDict()  # identity -> slot, port
        self._pending: dict[str, _Pending] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Unbounded on purpose: at most two events per port per fold window, and the
        # number of ports is physical; dropping an event here would lose a removal.
        self._queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._running = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.uevents_seen = 0  # raw udev events read (diagnostics; tests wait on it)

    # -- coldplug ---------------------------------------------------------------------

    def probe(self, port_path: str) -> UsbPhone | None:
        """Read and classify the device on one port now (None: no phone there)."""
        if not is_port_path(port_path):
            return None
        try:
            device = pyudev.Devices.from_name(self._context, "usb", port_path)
        except pyudev.DeviceNotFoundError:
            return None
        except OSError as exc:  # removed while reading
            log.debug("port %s vanished while reading: %s", port_path, exc)
            return None
        try:
            raw = read_device(device, use_libusb=self.use_libusb)
            return classify(raw, self.slots, self._ids) if raw else None
        except (OSError, ValidationError) as exc:
            # Half-removed device, or descriptors that fail validation: not a phone we can
            # handle. Logged, never raised: one odd device must not stop detection.
            log.warning("cannot read USB device on port %s: %s", port_path, exc)
            return None

    def _ports_present(self) -> list[str]:
        ports = [
            d.sys_name
            for d in self._context.list_devices(subsystem="usb", DEVTYPE="usb_device")
            if is_port_path(d.sys_name)
        ]
        return sorted(set(ports), key=_port_sort_key)

    def snapshot(self) -> list[UsbPhone]:
        """Every phone on USB now, sorted by port (coldplug; no udev events needed)."""
        phones = [self.probe(port) for port in self._ports_present()]
        return [p for p in phones if p is not None]

    @property
    def busy(self) -> bool:
        """True while some port has unsettled udev events (tests wait for False)."""
        return bool(self._pending)

    async def settled(self) -> None:
        """Wait until no port has unsettled udev events (bound it with `clock.timeout`)."""
        await self._idle.wait()

    def present(self) -> dict[str, UsbPhone]:
        """What `events()` last reported per port path (the daemon's view of the bench)."""
        return dict(self._reported)

    # -- hotplug ----------------------------------------------------------------------

    async def events(self, *, coldplug: bool = True) -> AsyncIterator[DeviceEvent]:
        """Settled, folded device events, forever (until the consumer stops iterating).

        The monitor starts before the start-up enumeration, so a phone plugged in during
        start-up is reported once, not missed. With `coldplug`, phones already present are
        reported first as `add` events with `coldplug=True` (and, if this watcher was
        iterated before, phones gone since then as `remove` events).

        Close it deterministically: `async with contextlib.aclosing(watcher.events()) as ev`.
        Raises WipeAgentError when udev's netlink socket cannot be opened.
        """
        if self._running:
            raise RuntimeError("UsbWatcher.events() is already being iterated")
        self._running = True
        loop = asyncio.get_running_loop()
        try:
            monitor = pyudev.Monitor.from_netlink(self._context)
            monitor.filter_by("usb")
            try:
                monitor.set_receive_buffer_size(_RECEIVE_BUFFER)
            except (OSError, ValueError) as exc:  # needs CAP_NET_ADMIN; not fatal
                log.debug("cannot enlarge udev receive buffer: %s", exc)
            monitor.start()
            fd = monitor.fileno()
            loop.add_reader(fd, self._on_readable, monitor)
        except OSError as exc:
            self._running = False
            raise WipeAgentError(
                f"cannot listen to udev events: {exc}",
                hint="run the agent on the bench PC with udev running (not in a bare container)",
            ) from exc
        try:
            if coldplug:
                now = self.clock.monotonic()
                # Record every phone before yielding any, so a settle that runs while the
                # consumer handles the first ones sees them all as already reported.
                initial = {phone.port_path: phone for phone in self.snapshot()}
                events: list[DeviceEvent] = []
                for port, old in list(self._reported.items()):
                    if port not in initial or not old.same_enumeration(initial[port]):
                        del self._reported[port]
                        events.append(DeviceEvent(action=EventAction.REMOVE, phone=old, at=now))
                for port, phone in initial.items():
                    if port not in self._reported:
                        self._reported[port] = phone
                        events.append(self._make_add(phone, now, coldplug=True))
                for event in events:
                    yield event
            while True:
                yield await self._queue.get()
        finally:
            loop.remove_reader(fd)
            for task in self._tasks.values():
                task.cancel()
            self._tasks.clear()
            self._pending.clear()
            self._idle.set()
            self._running = False
            del monitor  # libudev closes the socket when the monitor is freed

    def _on_readable(self, monitor: pyudev.Monitor) -> None:
        for _ in range(_DRAIN_PER_WAKEUP):
            try:
                device = monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return
                # ENOBUFS: the kernel dropped events. Re-read every port we know of.
                log.warning("udev monitor lost events (%s); re-reading all USB ports", exc)
                self._resync()
                return
            if device is None:
                return
            self.uevents_seen += 1
            port = device.sys_name.split(":", 1)[0]
            if is_port_path(port):
                self._touch(port)

    def _resync(self) -> None:
        for port in set(self._reported) | set(self._ports_present()):
            self._touch(port)

    def _touch(self, port: str) -> None:
        now = self.clock.monotonic()
        pending = self._pending.get(port)
        if pending is not None:
            pending.last = now
            return
        self._pending[port] = _Pending(first=now, last=now)
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._settle_later(port))
        self._tasks[port] = task
        task.add_done_callback(functools.partial(self._task_done, port))

    def _task_done(self, port: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(port) is task:
            del self._tasks[port]
        if not task.cancelled() and task.exception() is not None:
            log.error("settling port %s failed", port, exc_info=task.exception())

    async def _settle_later(self, port: str) -> None:
        while True:
            pending = self._pending[port]
            due = min(pending.last + self.fold_window, pending.first + self.max_fold)
            wait = due - self.clock.monotonic()
            if wait <= 0:
                break
            await self.clock.sleep(wait)
        # Drop the pending mark before reading, so an event during the read re-arms a settle.
        del self._pending[port]
        try:
            self._settle(port)
        except Exception:
            # One unreadable device must not stop the watcher; the next uevent retries it.
            log.exception("could not settle USB port %s", port)
        finally:
            if not self._pending:
                self._idle.set()

    def _settle(self, port: str) -> None:
        current = self.probe(port)
        previous = self._reported.get(port)
        now = self.clock.monotonic()
        if current is None:
            if previous is not None:
                del self._reported[port]
                self._queue.put_nowait(
                    DeviceEvent(action=EventAction.REMOVE, phone=previous, at=now)
                )
            return
        self._reported[port] = current
        if previous is None:
            self._queue.put_nowait(self._make_add(current, now))
        elif previous.same_enumeration(current):
            return  # a duplicate add or a blip that came back exactly as it was
        elif previous.identity is not None and previous.identity == current.identity:
            self._remember_phone(current)
            self._queue.put_nowait(
                DeviceEvent(action=EventAction.CHANGE, phone=current, previous=previous, at=now)
            )
        else:
            # A different phone (or one we cannot recognise) on the port: never a "change".
            self._queue.put_nowait(DeviceEvent(action=EventAction.REMOVE, phone=previous, at=now))
            self._queue.put_nowait(self._make_add(current, now))

    def _make_add(self, phone: UsbPhone, now: float, *, coldplug: bool = False) -> DeviceEvent:
        before = self._seen.get(phone.identity) if phone.identity else None
        self._remember_phone(phone)
        return DeviceEvent(
            action=EventAction.ADD,
            phone=phone,
            coldplug=coldplug,
            replug=before is not None,
            previous_slot=before[0] if before else None,
            previous_port_path=before[1] if before else None,
            at=now,
        )

    def _remember_phone(self, phone: UsbPhone) -> None:
        if not phone.identity:
            return
        self._seen[phone.identity] = (phone.slot, phone.port_path)
        self._seen.move_to_end(phone.identity)
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)


def _port_sort_key(port: str) -> tuple[int, ...]:
    bus, _, rest = port.partition("-")
    return (int(bus), *(int(p) for p in rest.split(".")))
