"""Who else is using a phone: a running `adb` server on Android, usbmuxd for iPhones.

Only one process can claim a USB interface. The `adb` server claims every ADB interface it
can open as soon as it sees it, and then adb-shell (the agent's transport) cannot; the
check says so before the transport fails with a vague "resource busy". What can be known:

- The kernel binds a claimed interface to the pseudo-driver `usbfs` (sysfs `driver` link,
  readable by anyone): *some* user-space process holds it. Certain, but anonymous.
- Which process: one with the phone's usbfs node (/dev/bus/usb/BBB/DDD) open. Reading other
  users' /proc/PID/fd needs root, so as a normal user such processes are counted as
  `unreadable`, not ignored.
- Whether an adb server is listening on 127.0.0.1:5037 (it may not hold *this* phone).

iPhones are reached through usbmuxd: its socket must exist and answer a ListDevices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

import pyudev
from pydantic import Field

from wipeagent.clock import Clock
from wipeagent.models import Frozen
from wipeagent.usb.classify import ADB, FASTBOOT, clean_serial, clean_text, read_device
from wipeagent.usb.model import UsbPhone

DEFAULT_USBMUXD = "/var/run/usbmuxd"
ADB_SERVER_PORT = 5037
_MAX_PROCESSES = 65536
_MAX_FDS_PER_PROCESS = 65536


class ProcessInfo(Frozen):
    pid: int
    name: str = Field(max_length=64)


class AdbClaimCheck(Frozen):
    """Whether another process holds the phone's ADB (or fastboot) interface."""

    port_path: str
    devnode: str
    has_adb_interface: bool
    claimed_by_userspace: bool | None = None  # None: device gone or no ADB interface
    holders: tuple[ProcessInfo, ...] = ()
    unreadable_processes: int = 0
    adb_server_listening: bool | None = None

    @property
    def conflict(self) -> bool:
        """True when the agent's transport will not be able to claim the interface."""
        return bool(self.claimed_by_userspace) or bool(self.holders)

    @property
    def message(self) -> str:
        """One sentence for the technician."""
        names = ", ".join(f"{h.name} (pid {h.pid})" for h in self.holders)
        if names:
            return f"the phone's USB interface is held by {names}: stop it (adb kill-server)"
        if self.claimed_by_userspace:
            extra = " an adb server is running;" if self.adb_server_listening else ""
            return (
                "the phone's ADB interface is claimed by another program;"
                f"{extra} stop it (adb kill-server) or run the check as root to name it"
            )
        if self.adb_server_listening:
            return "an adb server is running on this PC; it may grab phones (adb kill-server)"
        return "no other program holds the phone"


def find_usbfs_holders(
    devnode: str, *, proc: str = "/proc", exclude_self: bool = True
) -> tuple[list[ProcessInfo], int]:
    """Processes with `devnode` open, and how many processes could not be inspected."""
    try:
        target = os.stat(devnode)
    except OSError:
        target = None
    holders: list[ProcessInfo] = []
    unreadable = 0
    me = os.getpid()
    try:
        entries = [e for e in os.scandir(proc) if e.name.isdigit()][:_MAX_PROCESSES]
    except OSError:
        return [], 0
    for entry in entries:
        pid = int(entry.name)
        if exclude_self and pid == me:
            continue
        fd_dir = os.path.join(entry.path, "fd")
        try:
            fds = os.listdir(fd_dir)[:_MAX_FDS_PER_PROCESS]
        except PermissionError:
            unreadable += 1
            continue
        except OSError:
            continue  # exited meanwhile
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link == devnode or (target is not None and _same_file(link, target)):
                holders.append(ProcessInfo(pid=pid, name=_comm(entry.path)))
                break
    return holders, unreadable


def _same_file(path: str, target: os.stat_result) -> bool:
    if not path.startswith("/dev/bus/usb/"):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)


def _comm(proc_dir: str) -> str:
    try:
        return clean_text(Path(proc_dir, "comm").read_bytes()[:64]) or "?"
    except OSError:
        return "?"


async def tcp_listening(clock: Clock, host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port (bench seconds timeout)."""
    try:
        async with clock.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def check_adb_claim(
    phone: UsbPhone,
    clock: Clock,
    *,
    context: pyudev.Context | None = None,
    adb_server_port: int = ADB_SERVER_PORT,
    proc: str = "/proc",
) -> AdbClaimCheck:
    """Re-read the phone's interfaces and say whether another program holds ADB/fastboot."""
    ctx = context or pyudev.Context()
    try:
        device = pyudev.Devices.from_name(ctx, "usb", phone.port_path)
        raw = read_device(device, use_libusb=False)
    except (pyudev.DeviceNotFoundError, OSError):
        raw = None
    interfaces = raw.interfaces if raw else phone.interfaces
    wanted = [i for i in interfaces if (i.cls, i.subclass, i.protocol) in (ADB, FASTBOOT)]
    claimed = any(i.driver == "usbfs" for i in wanted) if (raw and wanted) else None
    holders, unreadable = find_usbfs_holders(phone.devnode, proc=proc) if phone.devnode else ([], 0)
    listening = await tcp_listening(clock, "127.0.0.1", adb_server_port)
    return AdbClaimCheck(
        port_path=phone.port_path,
        devnode=phone.devnode,
        has_adb_interface=bool(wanted),
        claimed_by_userspace=claimed,
        holders=tuple(holders),
        unreadable_processes=unreadable,
        adb_server_listening=listening,
    )


class UsbmuxdCheck(Frozen):
    """Whether usbmuxd is there and answering, and which devices it lists."""

    address: str
    socket_present: bool | None  # None for a TCP address
    answering: bool
    udids: tuple[str, ...] = ()
    detail: str = Field(default="", max_length=300)

    def sees(self, phone: UsbPhone) -> bool:
        """Whether usbmuxd lists this phone (USB serial vs UDID: the UDID has a dash)."""
        if not phone.serial:
            return False
        want = phone.serial.replace("-", "").upper()
        return any(u.replace("-", "").upper() == want for u in self.udids)


def usbmuxd_address(address: str | None = None) -> str:
    """The address to use: argument, else USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd."""
    addr = address or os.environ.get("USBMUXD_SOCKET_ADDRESS") or DEFAULT_USBMUXD
    # libusbmuxd spells a unix socket "UNIX:/path"; pymobiledevice3 wants the bare path.
    return addr[5:] if addr.startswith("UNIX:") else addr


async def check_usbmuxd(
    clock: Clock, address: str | None = None, *, timeout_s: float = 3.0
) -> UsbmuxdCheck:
    """Connect to usbmuxd, ask ListDevices (through pymobiledevice3), report what happened."""
    from pymobiledevice3.usbmux import list_devices

    addr = usbmuxd_address(address)
    present: bool | None = None
    if addr.startswith("/"):
        try:
            present = stat.S_ISSOCK(os.stat(addr).st_mode)
        except OSError:
            present = False
        if not present:
            return UsbmuxdCheck(
                address=addr,
                socket_present=False,
                answering=False,
                detail="usbmuxd is not running (no socket): sudo systemctl start usbmuxd",
            )
    try:
        async with clock.timeout(timeout_s):
            devices = await list_devices(usbmux_address=addr)
    except TimeoutError:
        return UsbmuxdCheck(
            address=addr,
            socket_present=present,
            answering=False,
            detail="usbmuxd did not answer in time: restart it (systemctl restart usbmuxd)",
        )
    except Exception as exc:
        return UsbmuxdCheck(
            address=addr,
            socket_present=present,
            answering=False,
            detail=clean_text(f"usbmuxd did not answer: {type(exc).__name__}: {exc}", 300),
        )
    udids = tuple(u for u in (clean_serial(str(d.serial)) for d in devices[:256]) if u)
    return UsbmuxdCheck(
        address=addr,
        socket_present=present,
        answering=True,
        udids=udids,
        detail=f"usbmuxd answered; {len(udids)} device(s)",
    )
