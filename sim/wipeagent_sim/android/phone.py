"""A simulated Android phone: the state a real phone keeps, and what reboots and resets do.

`SimAndroidPhone` implements `AdbDeviceBackend`, so the fake adbd in
`wipeagent_sim.adb.server` can put it on the wire. Its starting state comes from a profile
(`profiles.py`); shell commands are interpreted by `shell.py`.

What survives what, as on a real phone:

- a reboot keeps everything but runtime (non-persist) properties;
- `cmd testharness enable` (Android 10+) wipes user state (accounts, third-party apps,
  user files, settings, persist properties) but keeps the host's ADB keys, skips the
  setup wizard and sets persist.sys.test_harness=1;
- a normal factory reset from Settings wipes the same and also forgets ADB keys and
  turns USB debugging off; setup is not done until the technician walks through it.

Authorised ADB keys live in `state_dir/<serial>/adb_keys` so they survive a process
restart like adbd's /data/misc/adb/adb_keys survives a reboot.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import posixpath
import stat as statmod
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wipeagent.clock import Clock
from wipeagent_sim.adb.backend import FileStat, PowerCycleHandler, ShellResult
from wipeagent_sim.android.profiles import (
    MAX_FILE_BYTES,
    OutputSpec,
    PhoneProfile,
    decode_escapes,
    encode_value,
)

log = logging.getLogger(__name__)

PowerCycleKind = Literal["reboot", "testharness", "factory_reset"]

# adbd limits: a few dozen keys is plenty; a longer file means something is wrong.
MAX_ADB_KEYS = 64
MAX_ADB_KEY_BYTES = 4096
# The server should not need more than this to send the reply before the phone goes down.
POWER_CYCLE_DELAY = 1.0
MAX_PATH = 4096

# Internal backing store of shared storage, and the names a shell user reaches it by.
MEDIA_ROOT = "/data/media/0"
LOCAL_TMP = "/data/local/tmp"
STORAGE_ALIASES = ("/sdcard", "/storage/emulated/0", "/storage/self/primary", "/mnt/sdcard")
STANDARD_STORAGE_DIRS = (
    "Alarms", "Android", "Audiobooks", "DCIM", "Documents", "Download", "Movies", "Music",
    "Notifications", "Pictures", "Podcasts", "Recordings", "Ringtones",
)  # fmt: skip
# Standard directories that newer Android versions added (name -> first SDK).
STORAGE_DIRS_SINCE = {"Audiobooks": 29, "Recordings": 31}
# Top-level directories on read-only partitions: writes fail with EROFS, not EACCES.
READ_ONLY_TOPS = frozenset({"", "system", "vendor", "product", "system_ext", "odm", "apex"})

# Binaries on /system/bin that the shell knows; `which` and `ls /system/bin` see them.
SYSTEM_BINARIES = (
    "sh", "toybox", "getprop", "setprop", "settings", "dumpsys", "pm", "cmd", "id", "whoami",
    "ls", "cat", "rm", "mkdir", "touch", "echo", "sha256sum", "stat", "test", "which",
    "locksettings", "wm", "uname", "df", "reboot", "dpm", "am", "true", "false", "grep",
    "head", "wc", "service", "input",
)  # fmt: skip

_ERRNO_TEXT = {
    "ENOENT": "No such file or directory",
    "EACCES": "Permission denied",
    "EROFS": "Read-only file system",
    "EISDIR": "Is a directory",
    "ENOTDIR": "Not a directory",
    "EEXIST": "File exists",
    "ENOTEMPTY": "Directory not empty",
    "ENOSPC": "No space left on device",
    "ENAMETOOLONG": "File name too long",
    "EINVAL": "Invalid argument",
}


class FsError(Exception):
    """A filesystem call failed the way the Linux call would (`strerror` is the text)."""

    def __init__(self, code: str) -> None:
        super().__init__(_ERRNO_TEXT[code])
        self.code = code
        self.strerror = _ERRNO_TEXT[code]


@dataclass
class FsNode:
    """One file or directory. `mode` holds permission bits only (type is `is_dir`)."""

    is_dir: bool
    mode: int
    owner: str
    group: str
    mtime: int
    data: bytes = b""
    inode: int = 0

    @property
    def size(self) -> int:
        """Bytes for a file; the size a directory reports on its filesystem."""
        if self.is_dir:
            return 3452 if self.group in ("media_rw", "sdcard_rw") else 4096
        return len(self.data)

    def file_stat(self) -> FileStat:
        """The node as `sync:` STAT reports it (mode with type bits)."""
        kind = statmod.S_IFDIR if self.is_dir else statmod.S_IFREG
        return FileStat(mode=kind | self.mode, size=self.size, mtime=self.mtime)


Area = Literal["storage", "tmp", "data_root", "data_local", "data_private", "system"]


@dataclass(frozen=True)
class Resolved:
    """A path as the shell user sees it: where it really lives and what rules apply."""

    internal: str
    area: Area


class SimFileSystem:
    """A small in-memory filesystem with Android's rules for the shell user (uid 2000).

    The shell user may read and write shared storage (/sdcard and its aliases, backed by
    /data/media/0) and /data/local/tmp; may see but not list /data and /data/local; may not
    touch anything else under /data; may read but not write the system partitions.
    """

    def __init__(self, sdk: int, now: int) -> None:
        self.nodes: dict[str, FsNode] = {}
        self._next_inode = 1
        self.sdk = sdk
        self.now = now
        if sdk >= 30:  # FUSE-backed shared storage since Android 11
            self.storage_owner, self.storage_group = "u0_a197", "media_rw"
        else:
            self.storage_owner, self.storage_group = "root", "sdcard_rw"

    # --- construction ---------------------------------------------------------------

    def add(self, path: str, node: FsNode) -> None:
        """Insert a node (creating no parents)."""
        node.inode = self._next_inode
        self._next_inode += 1
        self.nodes[path] = node

    def add_dir(self, path: str, mode: int, owner: str, group: str) -> None:
        """Insert a directory and any missing parents (with the same attributes)."""
        parent = posixpath.dirname(path)
        if path != "/" and parent not in self.nodes:
            self.add_dir(parent, mode, owner, group)
        if path not in self.nodes:
            self.add(path, FsNode(True, mode, owner, group, self.now))

    def storage_dir_node(self, mtime: int) -> FsNode:
        """A new directory on shared storage."""
        mode = 0o2770 if self.sdk >= 30 else 0o771
        return FsNode(True, mode, self.storage_owner, self.storage_group, mtime)

    def storage_file_node(self, data: bytes, mtime: int, mode: int | None = None) -> FsNode:
        """A new file on shared storage."""
        return FsNode(
            False, mode if mode is not None else 0o660, self.storage_owner,
            self.storage_group, mtime, data,
        )  # fmt: skip

    def make_skeleton(self) -> None:
        """The directories every phone has; recreated after a factory reset."""
        self.add_dir("/", 0o755, "root", "root")
        self.add_dir("/data", 0o771, "system", "system")
        self.add_dir("/data/local", 0o751, "root", "root")
        self.add_dir(LOCAL_TMP, 0o771, "shell", "shell")
        self.add_dir("/data/media", 0o770, "media_rw", "media_rw")
        if MEDIA_ROOT not in self.nodes:
            self.add(MEDIA_ROOT, self.storage_dir_node(self.now))
        for name in STANDARD_STORAGE_DIRS:
            if name in STORAGE_DIRS_SINCE and self.sdk < STORAGE_DIRS_SINCE[name]:
                continue
            path = f"{MEDIA_ROOT}/{name}"
            if path not in self.nodes:
                self.add(path, self.storage_dir_node(self.now))
        self.add_dir("/storage", 0o755, "root", "root")
        self.add_dir("/storage/emulated", 0o751, "root", "sdcard_rw")
        self.add_dir("/system/bin", 0o755, "root", "shell")
        for name in SYSTEM_BINARIES:
            self.nodes.setdefault(f"/system/bin/{name}", FsNode(False, 0o755, "root", "shell", 0))
        if self.sdk < 29:  # /system/xbin went away with Android 10
            self.add_dir("/system/xbin", 0o755, "root", "shell")
        self.add_dir("/vendor", 0o755, "root", "shell")
        self.add_dir("/proc", 0o555, "root", "root")
        self.add_dir("/sys/class/power_supply/battery", 0o755, "root", "root")

    # --- path rules -----------------------------------------------------------------

    def resolve(self, path: str) -> Resolved:
        """Map a shell-visible path to its internal path and access area."""
        if not path or "\x00" in path:
            raise FsError("ENOENT")
        if len(path) > MAX_PATH:
            raise FsError("ENAMETOOLONG")
        if not path.startswith("/"):
            path = "/" + path  # `adb shell` starts in /
        norm = posixpath.normpath(path)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        for alias in STORAGE_ALIASES:
            if norm == alias or norm.startswith(alias + "/"):
                return Resolved(MEDIA_ROOT + norm[len(alias) :], "storage")
        if norm == LOCAL_TMP or norm.startswith(LOCAL_TMP + "/"):
            return Resolved(norm, "tmp")
        if norm == "/data":
            return Resolved(norm, "data_root")
        if norm == "/data/local":
            return Resolved(norm, "data_local")
        if norm.startswith("/data/"):
            return Resolved(norm, "data_private")
        return Resolved(norm, "system")

    def _existing(self, res: Resolved) -> FsNode:
        if res.area == "data_private":
            raise FsError("EACCES")
        parent = posixpath.dirname(res.internal)
        while parent != "/":
            parent_node = self.nodes.get(parent)
            if parent_node is not None and not parent_node.is_dir:
                raise FsError("ENOTDIR")
            parent = posixpath.dirname(parent)
        node = self.nodes.get(res.internal)
        if node is None:
            raise FsError("ENOENT")
        return node

    def _check_writable(self, res: Resolved) -> None:
        if res.area in ("storage", "tmp"):
            return
        if res.area == "system":
            top = res.internal.split("/")[1] if res.internal != "/" else ""
            raise FsError("EROFS" if top in READ_ONLY_TOPS else "EACCES")
        raise FsError("EACCES")

    # --- operations -------------------------------------------------------------------

    def stat(self, path: str) -> FsNode:
        """The node at `path` (raises FsError)."""
        return self._existing(self.resolve(path))

    def children(self, internal: str) -> Iterator[tuple[str, FsNode]]:
        """Direct children of an internal directory path, sorted by name."""
        prefix = internal.rstrip("/") + "/"
        names = []
        for key, node in self.nodes.items():
            if key.startswith(prefix) and key != prefix and "/" not in key[len(prefix) :]:
                names.append((key[len(prefix) :], node))
        yield from sorted(names)

    def listdir(self, path: str) -> list[tuple[str, FsNode]]:
        """Entries of a directory the shell user may list (raises FsError)."""
        res = self.resolve(path)
        node = self._existing(res)
        if not node.is_dir:
            raise FsError("ENOTDIR")
        if res.area in ("data_root", "data_local") or res.internal in (
            "/data/media",
            "/storage/emulated",
        ):
            raise FsError("EACCES")
        return list(self.children(res.internal))

    def read(self, path: str, limit: int = MAX_FILE_BYTES) -> bytes:
        """A file's contents (raises FsError)."""
        node = self.stat(path)
        if node.is_dir:
            raise FsError("EISDIR")
        if not node.mode & 0o444:
            raise FsError("EACCES")
        return node.data[:limit]

    def write(
        self,
        path: str,
        data: bytes,
        *,
        append: bool = False,
        mode: int | None = None,
        mtime: int | None = None,
        make_parents: bool = False,
    ) -> None:
        """Create or replace (or append to) a file (raises FsError)."""
        res = self.resolve(path)
        self._check_writable(res)
        parent = posixpath.dirname(res.internal)
        if parent not in self.nodes:
            if not make_parents:
                raise FsError("ENOENT")
            self._mkdirs(res, parent)
        elif not self.nodes[parent].is_dir:
            raise FsError("ENOTDIR")
        existing = self.nodes.get(res.internal)
        if existing is not None and existing.is_dir:
            raise FsError("EISDIR")
        new_data = (existing.data if existing and append else b"") + data
        if len(new_data) > MAX_FILE_BYTES:
            raise FsError("ENOSPC")
        when = mtime if mtime is not None else self.now
        if existing is not None:
            existing.data = new_data
            existing.mtime = when
            if mode is not None:
                existing.mode = mode & 0o7777
            return
        self.add(res.internal, self._new_file(res, new_data, when, mode))

    def _new_file(self, res: Resolved, data: bytes, mtime: int, mode: int | None) -> FsNode:
        if res.area == "storage":
            return self.storage_file_node(data, mtime, None)
        perm = (mode & 0o777) if mode is not None else 0o666
        return FsNode(False, perm, "shell", "shell", mtime, data)

    def _new_dir(self, res: Resolved) -> FsNode:
        if res.area == "storage":
            return self.storage_dir_node(self.now)
        return FsNode(True, 0o775, "shell", "shell", self.now)

    def _mkdirs(self, res: Resolved, internal: str) -> None:
        missing = []
        cur = internal
        while cur not in self.nodes:
            missing.append(cur)
            cur = posixpath.dirname(cur)
        if not self.nodes[cur].is_dir:
            raise FsError("ENOTDIR")
        for item in reversed(missing):
            self.add(item, self._new_dir(Resolved(item, res.area)))

    def mkdir(self, path: str, *, parents: bool = False) -> None:
        """mkdir / mkdir -p (raises FsError)."""
        res = self.resolve(path)
        existing = None
        with contextlib.suppress(FsError):
            existing = self._existing(res)
        if existing is not None:
            if parents and existing.is_dir:
                return
            raise FsError("EEXIST")
        self._check_writable(res)
        parent = posixpath.dirname(res.internal)
        if parent not in self.nodes:
            if not parents:
                raise FsError("ENOENT")
            self._mkdirs(res, parent)
        elif not self.nodes[parent].is_dir:
            raise FsError("ENOTDIR")
        self.add(res.internal, self._new_dir(res))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """rm / rm -r (raises FsError)."""
        res = self.resolve(path)
        node = self._existing(res)
        self._check_writable(res)
        if res.internal in (MEDIA_ROOT, LOCAL_TMP):
            raise FsError("EACCES")  # the mount point itself: the parent is not writable
        if node.is_dir:
            if not recursive:
                raise FsError("EISDIR")
            prefix = res.internal + "/"
            for key in [k for k in self.nodes if k.startswith(prefix)]:
                del self.nodes[key]
        del self.nodes[res.internal]

    def touch(self, path: str, mtime: int) -> None:
        """touch: create an empty file or update the mtime (raises FsError)."""
        res = self.resolve(path)
        node = None
        with contextlib.suppress(FsError):
            node = self._existing(res)
        if node is not None:
            self._check_writable(res)
            node.mtime = mtime
            return
        self.write(path, b"", mtime=mtime)

    def wipe_user_data(self) -> None:
        """What a factory reset does to files: shared storage and /data/local/tmp emptied."""
        for root in (MEDIA_ROOT, LOCAL_TMP):
            prefix = root + "/"
            for key in [k for k in self.nodes if k.startswith(prefix)]:
                del self.nodes[key]
        self.make_skeleton()

    def user_files(self) -> dict[str, bytes]:
        """Every user file (shell-visible path -> contents), for tests."""
        out = {}
        for key, node in self.nodes.items():
            if node.is_dir:
                continue
            if key.startswith(MEDIA_ROOT + "/"):
                out["/sdcard" + key[len(MEDIA_ROOT) :]] = node.data
            elif key.startswith(LOCAL_TMP + "/"):
                out[key] = node.data
        return out

    def user_bytes(self) -> int:
        """Total size of user files."""
        return sum(len(data) for data in self.user_files().values())


@dataclass(frozen=True)
class Account:
    """An account as AccountManager holds it."""

    type: str
    name: str


@dataclass(frozen=True)
class Package:
    """An installed package."""

    name: str
    path: str
    system: bool
    enabled: bool = True
    version_code: int = 1
    size_kb: int = 0


@dataclass(frozen=True)
class DeviceOwner:
    """A device-owner admin."""

    package: str
    receiver: str
    name: str = ""


# Packages every phone in the simulation ships with (path, name).
BASE_SYSTEM_PACKAGES = (
    ("/system/framework/framework-res.apk", "android"),
    ("/system/priv-app/SettingsProvider/SettingsProvider.apk", "com.android.providers.settings"),
    ("/system/priv-app/Shell/Shell.apk", "com.android.shell"),
    ("/system/app/Bluetooth/Bluetooth.apk", "com.android.bluetooth"),
    ("/system/priv-app/Settings/Settings.apk", "com.android.settings"),
    ("/system/priv-app/SystemUI/SystemUI.apk", "com.android.systemui"),
    ("/system/priv-app/GmsCore/GmsCore.apk", "com.google.android.gms"),
    ("/product/app/Chrome/Chrome.apk", "com.android.chrome"),
)

HEALTH_CODES = {
    "unknown": 1, "good": 2, "overheat": 3, "dead": 4, "over_voltage": 5,
    "unspecified_failure": 6, "cold": 7,
}  # fmt: skip
STATUS_CODES = {"unknown": 1, "charging": 2, "discharging": 3, "not_charging": 4, "full": 5}


def _third_party_path(name: str) -> str:
    # Android 11+ install dirs: /data/app/~~<random>==/<pkg>-<random>==/base.apk
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    outer = base64.urlsafe_b64encode(digest[:16]).decode()[:22]
    inner = base64.urlsafe_b64encode(digest[16:]).decode()[:22]
    return f"/data/app/~~{outer}==/{name}-{inner}==/base.apk"


def _generated_bytes(path: str, size: int) -> bytes:
    # Deterministic, incompressible-looking content so hashes are stable between runs.
    return hashlib.shake_256(path.encode("utf-8", "surrogateescape")).digest(size)


def _key_id(android_pubkey: bytes) -> str | None:
    """The base64 key blob of an adb public key line, or None if it is not one."""
    text = android_pubkey.rstrip(b"\x00").strip()
    if not text or len(text) > MAX_ADB_KEY_BYTES:
        return None
    blob = text.split()[0]
    try:
        base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    return blob.decode("ascii")


@dataclass
class _PendingPrompt:
    key_line: str
    future: asyncio.Future[bool]


@dataclass
class _Counters:
    power_cycles: int = 0
    factory_resets: int = 0
    last_power_cycle: PowerCycleKind | None = None
    history: list[PowerCycleKind] = field(default_factory=list)
    screen_wakeups: int = 0  # `input keyevent KEYCODE_WAKEUP` (the bench's "identify")


class SimAndroidPhone:
    """A simulated Android phone (implements `AdbDeviceBackend`)."""

    def __init__(self, profile: PhoneProfile, *, name: str, state_dir: Path, clock: Clock) -> None:
        self.profile = profile
        self.profile_name = name
        self.clock = clock
        self.serial = profile.device.serial
        self.state_dir = state_dir
        self._keys_path = state_dir / self.serial / "adb_keys"
        self._handler: PowerCycleHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[_PendingPrompt] = []
        self._pending_kind: PowerCycleKind | None = None
        self.counters = _Counters()
        self.online = True
        self.plugged = True
        dev = profile.device
        self.sdk = dev.sdk
        self.lock_screen = dev.lock_screen
        self.su_path = dev.su_path
        self.adb_on = dev.adb_enabled
        self.setup_complete = True
        # ContentResolver master sync (auto-sync of accounts); not a Settings value.
        self.master_sync = True
        self._adb_off_handler: Callable[[], None] | None = None
        # `locksettings verify` without the credential counts as a failed unlock attempt.
        self.failed_unlock_attempts = 0
        self.boot_count = dev.boot_count
        self.generation = 0  # bumped by each factory reset (new android_id)
        self._authorised: list[str] = self._load_keys()
        self.build_props = self._build_properties()
        self.persist_props: dict[str, str] = {"persist.sys.timezone": dev.timezone}
        self.runtime_props: dict[str, str] = {}
        self._boot_runtime_props()
        self.settings: dict[str, dict[str, str]] = {}
        self._reset_settings()
        for namespace, values in profile.settings.items():
            for key, value in values.items():
                self.settings[namespace][key] = decode_escapes(_setting_text(value))
        self.settings["global"]["boot_count"] = str(self.boot_count)
        self.accounts: list[Account] = [
            Account(decode_escapes(a.type), decode_escapes(a.name)) for a in profile.accounts
        ]
        self.packages: list[Package] = self._initial_packages()
        owner = profile.device_owner
        self.device_owner = (
            DeviceOwner(owner.package, owner.receiver, owner.name) if owner is not None else None
        )
        self.user_data_kb = profile.storage.user_data_kb
        self.telephony = profile.telephony
        self.fs = SimFileSystem(self.sdk, now=1_700_000_000)
        self.fs.make_skeleton()
        self._load_files()
        self._install_root_and_sysfs()
        # The kernel's view: /proc/sys/kernel/random/boot_id and /proc/uptime.
        self.boot_id = str(uuid.uuid4())
        self.booted_at = clock.monotonic() - dev.uptime_s
        # What a lying phone keeps hidden from the shell (truth, not what it says).
        self.hidden_user_files: dict[str, bytes] = {}
        self.hidden_user_data_kb = 0
        self.hidden_apps_kb = 0
        self.reset_answered = False  # the reset has "happened" as far as the phone says
        self.prompt_override: str | None = None

    # --- construction helpers ---------------------------------------------------------

    def _build_properties(self) -> dict[str, str]:
        dev = self.profile.device
        fingerprint = dev.fingerprint or (
            f"{dev.brand}/{dev.name}/{dev.device}:{dev.android_version}/{dev.build_id}/"
            f"{dev.incremental}:{dev.build_type}/{dev.build_tags}"
        )
        props = {
            "ro.serialno": dev.serial,
            "ro.boot.serialno": dev.serial,
            "ro.product.manufacturer": dev.manufacturer,
            "ro.product.brand": dev.brand,
            "ro.product.model": dev.model,
            "ro.product.name": dev.name,
            "ro.product.device": dev.device,
            "ro.product.cpu.abi": dev.abi,
            "ro.hardware": dev.hardware,
            "ro.build.fingerprint": fingerprint,
            "ro.build.id": dev.build_id,
            "ro.build.display.id": dev.build_id,
            "ro.build.type": dev.build_type,
            "ro.build.tags": dev.build_tags,
            "ro.build.version.release": dev.android_version,
            "ro.build.version.sdk": str(dev.sdk),
            "ro.build.version.incremental": dev.incremental,
            "ro.build.version.security_patch": dev.security_patch,
            "ro.debuggable": "0" if dev.build_type == "user" else "1",
            "ro.secure": "1" if dev.build_type == "user" else "0",
            "ro.adb.secure": "1",
            "ro.boot.verifiedbootstate": dev.verified_boot_state,
            "ro.boot.flash.locked": "1" if dev.bootloader_locked else "0",
            "ro.boot.vbmeta.device_state": "locked" if dev.bootloader_locked else "unlocked",
            "ro.oem_unlock_supported": "1",
            "ro.crypto.state": "unencrypted" if dev.encryption == "none" else "encrypted",
        }
        if dev.encryption != "none":
            props["ro.crypto.type"] = dev.encryption
        if dev.encryption == "file":
            props["ro.crypto.volume.filenames_mode"] = "aes-256-cts"
            if dev.sdk >= 30:
                props["ro.crypto.metadata.enabled"] = "true"
        if dev.bootloader:
            props["ro.bootloader"] = dev.bootloader
        if dev.baseband:
            props["gsm.version.baseband"] = dev.baseband
        props.update(self.profile.properties)
        # Device fields and overrides alike may carry byte escapes (bad-input profiles).
        return {key: decode_escapes(value) for key, value in props.items()}

    def _boot_runtime_props(self) -> None:
        self.runtime_props = {
            "sys.boot_completed": "1",
            "dev.bootcomplete": "1",
            "init.svc.adbd": "running",
            "sys.usb.config": "mtp,adb" if self.adb_on else "mtp",
            "sys.usb.state": "mtp,adb" if self.adb_on else "mtp",
        }

    def _reset_settings(self) -> None:
        """Factory defaults (what a freshly set-up phone reports)."""
        android_id = hashlib.sha256(f"{self.serial}/{self.generation}".encode()).hexdigest()[:16]
        self.settings = {
            "system": {
                "screen_brightness": "102",
                "screen_off_timeout": "30000",
                "font_scale": "1.0",
                "haptic_feedback_enabled": "1",
            },
            "secure": {
                "android_id": android_id,
                "user_setup_complete": "1" if self.setup_complete else "0",
                "lockscreen.disabled": "1" if self.lock_screen == "none" else "0",
                "install_non_market_apps": "1",
            },
            "global": {
                "adb_enabled": "1" if self.adb_on else "0",
                "development_settings_enabled": "1" if self.adb_on else "0",
                "device_provisioned": "1" if self.setup_complete else "0",
                "airplane_mode_on": "0",
                "auto_time": "1",
                "stay_on_while_plugged_in": "0",
                "boot_count": str(self.boot_count),
            },
        }

    def _initial_packages(self) -> list[Package]:
        packages = [Package(name, path, True) for path, name in BASE_SYSTEM_PACKAGES]
        for entry in self.profile.packages:
            name = decode_escapes(entry.name)
            if entry.path:
                path = entry.path
            elif entry.system:
                path = f"/system/app/{name.rsplit('.', 1)[-1]}/{name.rsplit('.', 1)[-1]}.apk"
            else:
                path = _third_party_path(name)
            packages = [p for p in packages if p.name != name]
            packages.append(Package(name, path, entry.system, entry.enabled, entry.version_code,
                                    0 if entry.system else entry.size_kb))
        return packages

    def _load_files(self) -> None:
        for directory in self.profile.dirs:
            self.fs.mkdir(directory, parents=True)
        for entry in self.profile.files:
            if entry.content is not None:
                data = encode_value(decode_escapes(entry.content))
            else:
                data = _generated_bytes(entry.path, entry.size or 0)
            self.fs.write(entry.path, data, mode=entry.mode, mtime=entry.mtime, make_parents=True)

    def _install_root_and_sysfs(self) -> None:
        if self.su_path:
            parent = posixpath.dirname(self.su_path)
            self.fs.add_dir(parent, 0o755, "root", "shell")
            self.fs.add(self.su_path, FsNode(False, 0o6755, "root", "shell", 1_690_000_000))
        battery = self.profile.battery
        base = "/sys/class/power_supply/battery"
        sysfs = {
            "capacity": str(battery.level),
            "status": battery.status.replace("_", " ").title(),
            "temp": str(battery.temperature),
            "voltage_now": str(battery.voltage * 1000),
        }
        if battery.cycle_count is not None:
            sysfs["cycle_count"] = str(battery.cycle_count)
        for name, value in sysfs.items():
            node = FsNode(False, 0o444, "root", "root", 0, f"{value}\n".encode())
            self.fs.add(f"{base}/{name}", node)

    # --- ADB keys ---------------------------------------------------------------------

    def _load_keys(self) -> list[str]:
        try:
            raw = self._keys_path.read_bytes()[: MAX_ADB_KEYS * MAX_ADB_KEY_BYTES]
        except FileNotFoundError:
            return []
        keys = []
        for line in raw.decode("ascii", "replace").splitlines():
            if _key_id(line.encode()) is not None:
                keys.append(line.strip())
        return keys[:MAX_ADB_KEYS]

    def _save_keys(self) -> None:
        self._keys_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._keys_path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}\n" for k in self._authorised), encoding="ascii")
        os.replace(tmp, self._keys_path)  # atomic: a crash never leaves half a key file

    def authorised_keys(self) -> list[str]:
        """The authorised key lines (read-only copy)."""
        return list(self._authorised)

    def authorise_key(self, android_pubkey: bytes) -> bool:
        """Add a key as if the person had ticked "Always allow"; False if malformed."""
        key_id = _key_id(android_pubkey)
        if key_id is None:
            return False
        if not self.is_key_authorised(android_pubkey):
            line = android_pubkey.rstrip(b"\x00").strip().decode("ascii", "replace")
            self._authorised = [*self._authorised, line][-MAX_ADB_KEYS:]
            self._save_keys()
        return True

    def _clear_keys(self) -> None:
        self._authorised = []
        with contextlib.suppress(FileNotFoundError):
            self._keys_path.unlink()

    # --- AdbDeviceBackend -------------------------------------------------------------

    def banner(self) -> bytes:
        """The CNXN banner (raw property bytes: a hostile model name goes out as it is)."""
        props = self.properties()
        parts = [
            f"ro.product.name={props.get('ro.product.name', '')}",
            f"ro.product.model={props.get('ro.product.model', '')}",
            f"ro.product.device={props.get('ro.product.device', '')}",
            f"features={self.adb_features()}",
        ]
        return b"device::" + encode_value(";".join(parts))

    def adb_features(self) -> str:
        """The feature list of the CNXN banner."""
        if self.profile.device.adb_features is not None:
            return self.profile.device.adb_features
        return "shell_v2,cmd,stat_v2,ls_v2" if self.sdk >= 30 else "shell_v2,cmd,stat_v2"

    def adb_enabled(self) -> bool:
        """False while USB debugging is off, the phone is rebooting or unplugged."""
        return self.adb_on and self.online and self.plugged

    def is_key_authorised(self, android_pubkey: bytes) -> bool:
        """Is this adb public key (base64 blob + optional ' user@host') authorised?"""
        key_id = _key_id(android_pubkey)
        if key_id is None:
            return False
        return any(line.split()[0] == key_id for line in self._authorised)

    async def ask_user_to_authorise(self, android_pubkey: bytes) -> bool:
        """Show "Allow USB debugging?" and wait for the simulated person (see profile)."""
        if _key_id(android_pubkey) is None or not self.adb_enabled():
            return False
        if self.is_key_authorised(android_pubkey):
            return True
        policy = self.profile.authorisation
        if self.prompt_override is not None:
            policy = policy.model_copy(update={"prompt": self.prompt_override})
        if policy.prompt == "refuse":
            return False
        line = android_pubkey.rstrip(b"\x00").strip().decode("ascii", "replace")
        prompt = _PendingPrompt(line, asyncio.get_running_loop().create_future())
        self._pending.append(prompt)
        try:
            if policy.prompt == "accept":
                # The simulated person taps Allow after `accept_after` bench seconds, or
                # earlier if a control call answers the dialog first.
                try:
                    accepted = await self.clock.wait_for(
                        asyncio.shield(prompt.future), policy.accept_after
                    )
                except TimeoutError:
                    accepted = True
            else:
                # No timeout on purpose: a real phone shows the dialog until someone
                # answers; the client's own timeout ends the wait.
                accepted = await prompt.future
        finally:
            if prompt in self._pending:
                self._pending.remove(prompt)
            if not prompt.future.done():
                prompt.future.cancel()
        return accepted and self.authorise_key(line.encode("ascii"))

    def pending_authorisations(self) -> int:
        """How many "Allow USB debugging?" dialogs are waiting for an answer."""
        return sum(1 for p in self._pending if not p.future.done())

    def accept_pending_authorisation(self) -> bool:
        """The technician taps Allow (with Always allow ticked). False if nothing pends."""
        return self._answer_pending(True)

    def refuse_pending_authorisation(self) -> bool:
        """The technician taps Deny. False if nothing pends."""
        return self._answer_pending(False)

    def _answer_pending(self, accepted: bool) -> bool:
        answered = False
        for prompt in self._pending:
            if not prompt.future.done():
                prompt.future.set_result(accepted)
                answered = True
        return answered

    async def shell(self, command: str) -> ShellResult:
        """Run one non-interactive command line as the shell user (with the profile's
        post-reset answers and noise, if any)."""
        from wipeagent_sim.android.shell import AndroidShell

        lie = self.profile.lie
        spec = lie.outputs_after.get(command) if self.reset_answered else None
        if spec is not None:
            result = ShellResult(stdout=_output(spec), stderr=b"", exit_code=0)
        else:
            result = await AndroidShell(self).run(command)
        return self._noisy(result)

    def _noisy(self, result: ShellResult) -> ShellResult:
        noise = self.profile.noise
        if not (noise.trailing_spaces or noise.blank_lines or noise.crlf) or not result.stdout:
            return result
        lines = result.stdout.split(b"\n")
        if noise.trailing_spaces:
            lines = [line + b"   " if line else line for line in lines]
        out = b"\n".join(lines)
        if noise.blank_lines:
            out = b"\n" + out + b"\n\n"
        if noise.crlf:
            out = out.replace(b"\n", b"\r\n")
        return ShellResult(stdout=out, stderr=result.stderr, exit_code=result.exit_code)

    def proc_file(self, path: str) -> bytes | None:
        """The kernel's files the shell user may read: boot id and uptime (None: not one
        of them)."""
        if path == "/proc/sys/kernel/random/boot_id":
            return f"{self.boot_id}\n".encode()
        if path == "/proc/uptime":
            up = max(0.0, self.clock.monotonic() - self.booted_at)
            return f"{up:.2f} {up * 3.7:.2f}\n".encode()
        return None

    def truth(self) -> dict[str, object]:
        """What really happened to the phone's data (for tests and the fault matrix),
        whatever the phone says: erased only after a reset that removed every user file,
        account, third-party app and user data, hidden copies included."""
        data_left = bool(self.fs.user_files() or self.hidden_user_files or self.accounts
                         or self.third_party_packages() or self.user_data_kb
                         or self.hidden_user_data_kb or self.hidden_apps_kb)
        return {"erased": self.counters.factory_resets >= 1 and not data_left,
                "factory_resets": self.counters.factory_resets,
                "power_cycles": self.counters.power_cycles,
                "user_files": len(self.fs.user_files()) + len(self.hidden_user_files),
                "history": list(self.counters.history),
                "online": self.online}

    def stat(self, path: str) -> FileStat | None:
        """sync STAT: None if missing or not visible to the shell user."""
        try:
            return self.fs.stat(path).file_stat()
        except FsError:
            return None

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None:
        """sync LIST: entries, or None if not a readable directory."""
        try:
            return [(name, node.file_stat()) for name, node in self.fs.listdir(path)]
        except FsError:
            return None

    def read_file(self, path: str) -> bytes | None:
        """sync RECV: contents, or None if missing or unreadable."""
        try:
            return self.fs.read(path)
        except FsError:
            return None

    def write_file(self, path: str, data: bytes, mode: int, mtime: int) -> str | None:
        """sync SEND: None on success, or adbd's error text."""
        try:
            # adbd creates missing parent directories for a push.
            self.fs.write(path, data, mode=mode & 0o777, mtime=mtime, make_parents=True)
        except FsError as exc:
            return f"couldn't create file: {exc.strerror}"
        return None

    def protocol_fault(self, service: str) -> str | None:
        """The profile's fault for `service`, matched by the longest key prefix.

        `shell,v2,raw:cmd` and `shell:cmd` are the same command, so shell services are
        also matched in their `shell:cmd` form."""
        candidates = [service]
        head, sep, rest = service.partition(":")
        if sep and head.startswith("shell,"):
            candidates.append(f"shell:{rest}")
        best: tuple[int, str] | None = None
        for prefix, fault in self.profile.faults.items():
            if any(c.startswith(prefix) for c in candidates) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), fault)
        return best[1] if best else None

    def set_power_cycle_handler(self, handler: PowerCycleHandler) -> None:
        """Register the server's handler (see `PowerCycleHandler`)."""
        self._handler = handler

    async def request_reboot(self, target: str) -> None:
        """`reboot:` / `reboot:TARGET`. Every target is a plain reboot in the simulation."""
        log.info("[Android|%s] reboot requested (target %r)", self.serial, target[:32])
        self.schedule_power_cycle("reboot")

    async def finish_power_cycle(self) -> None:
        """Sleep the reboot time (bench seconds) and apply what the power cycle does."""
        self.online = False
        kind = self._pending_kind or "reboot"
        lie = self.profile.lie
        reboots = kind != "testharness" or lie.reboot
        await self.clock.sleep(self.profile.device.reboot_seconds if reboots
                               else lie.adbd_restart_seconds)
        self._pending_kind = None
        if kind == "testharness":
            self._testharness_reset()
        elif kind == "factory_reset":
            self._factory_reset(keep_adb_keys=False)
        else:
            self.boot_count += 1
            self.settings["global"]["boot_count"] = str(self.boot_count)
        if reboots:
            self.boot_id = str(uuid.uuid4())
            self.booted_at = self.clock.monotonic()
        elif lie.spoof_boot_id:
            self.boot_id = str(uuid.uuid4())
        self._boot_runtime_props()
        self.counters.power_cycles += 1
        self.counters.last_power_cycle = kind
        self.counters.history.append(kind)
        if kind == "testharness" and lie.never_returns:
            log.info("[Android|%s] stays off after its reset (lie)", self.serial)
            await asyncio.Event().wait()  # until the bench shuts down
        self.online = True
        log.info("[Android|%s] booted after %s", self.serial, kind)

    def _testharness_reset(self) -> None:
        """`cmd testharness enable` as the profile's [lie] has it (honest by default)."""
        lie = self.profile.lie
        self.reset_answered = True
        if lie.reset == "none":
            if lie.reboot:
                self.boot_count += 1
                self.settings["global"]["boot_count"] = str(self.boot_count)
        elif lie.reset == "full":
            self._factory_reset(keep_adb_keys=True)
        elif lie.reset == "fake":
            # The shell sees a fresh phone; the data stays on it, out of the shell's sight.
            self.hidden_user_files.update(self.fs.user_files())
            self.hidden_user_data_kb += self.user_data_kb
            self.hidden_apps_kb += sum(p.size_kb for p in self.packages if not p.system)
            self._factory_reset(keep_adb_keys=True, real=False)
        else:  # partial
            kept = {path: data for path, data in self.fs.user_files().items()
                    if self._kept(path)}
            setting = self.settings["global"].get("wipeagent_canary")
            user_data_kb = self.user_data_kb
            self._factory_reset(keep_adb_keys=True, real=False)
            for path, data in kept.items():
                self.fs.write(path, data, make_parents=True)
            if "user_files" in lie.keep:
                self.user_data_kb = user_data_kb
            if setting is not None and "canary_setting" in lie.keep:
                self.settings["global"]["wipeagent_canary"] = setting
        if lie.encryption_after is not None:
            encrypted = lie.encryption_after != "none"
            self.build_props["ro.crypto.state"] = "encrypted" if encrypted else "unencrypted"
            if encrypted:
                self.build_props["ro.crypto.type"] = lie.encryption_after
            else:
                self.build_props.pop("ro.crypto.type", None)
        if lie.serial_after is not None:
            for key in ("ro.serialno", "ro.boot.serialno"):
                self.build_props[key] = lie.serial_after
        if lie.revoke_adb_keys:
            self._clear_keys()
            self.prompt_override = "manual"  # nobody at the phone taps Allow

    def _kept(self, path: str) -> bool:
        """Whether a partial reset keeps this user file (canary files are the bench's)."""
        canary = posixpath.basename(path).startswith(".wipeagent-")
        return ("canary_files" in self.profile.lie.keep) if canary else (
            "user_files" in self.profile.lie.keep)

    # --- power cycles and resets ------------------------------------------------------

    def schedule_power_cycle(self, kind: PowerCycleKind) -> asyncio.Task[None]:
        """Power-cycle from a task, after the current reply has gone out.

        Returns the task; it ends when the phone has booted again. Without a registered
        server handler the phone runs `finish_power_cycle` itself."""
        # A reset outranks a reboot requested in the same breath.
        rank = {"reboot": 0, "testharness": 1, "factory_reset": 2}
        if self._pending_kind is None or rank[kind] > rank[self._pending_kind]:
            self._pending_kind = kind
        task = asyncio.get_running_loop().create_task(self._power_cycle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _power_cycle(self) -> None:
        await self.clock.sleep(POWER_CYCLE_DELAY)
        if self._pending_kind is None:
            return  # an earlier task already performed this power cycle
        if self._handler is not None:
            await self._handler()
        else:
            await self.finish_power_cycle()

    async def wait_power_cycles(self) -> None:
        """Wait until every scheduled power cycle has finished (for tests and demos)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def _factory_reset(self, *, keep_adb_keys: bool, real: bool = True) -> None:
        if real:  # a partial or faked reset is not one
            self.counters.factory_resets += 1
        self.generation += 1
        self.accounts = []
        self.packages = [p for p in self.packages if p.system]
        self.device_owner = None
        self.fs.wipe_user_data()
        self.user_data_kb = 0
        self.persist_props = {"persist.sys.timezone": self.profile.device.timezone}
        self.boot_count = 1
        if keep_adb_keys:
            self._test_harness_mode_setup()
        else:
            self._clear_keys()
            self.adb_on = False
            self.setup_complete = False
            self.lock_screen = "swipe"
            self.master_sync = True
            self._reset_settings()

    def _test_harness_mode_setup(self) -> None:
        """What TestHarnessModeService applies after its reset, as each Android version
        does it (frameworks/base .../testharness/TestHarnessModeService.java; the versions
        read are listed in docs/handoff.md). setUpTestHarnessMode, before boot completes:
        device provisioned and user setup complete (no setup wizard), the lock screen
        disabled, persist.sys.test_harness=1. completeTestHarnessModeSetup, once booted:
        the ADB keys written back (they were never deleted here), configureSettings and
        configureUser below."""
        self.setup_complete = True
        self.lock_screen = "none"  # LockPatternUtils.setLockScreenDisabled(true)
        self.persist_props["persist.sys.test_harness"] = "1"
        self._reset_settings()
        glob, secure = self.settings["global"], self.settings["secure"]
        # configureSettings. Android 13+ leaves adb_enabled to AdbService, which turns ADB
        # on while persist.sys.test_harness is 1: from the shell the setting reads the same.
        self.adb_on = True
        glob["adb_enabled"] = "1"
        glob["adb_allowed_connection_time"] = "0"  # the bench's key never expires
        glob["development_settings_enabled"] = "1"
        if self.sdk >= 30:
            glob["verifier_verify_adb_installs"] = "0"  # PACKAGE_VERIFIER_INCLUDE_ADB
        else:
            glob["package_verifier_enable"] = "0"  # PACKAGE_VERIFIER_ENABLE (Android 10)
        # BatteryManager.BATTERY_PLUGGED_ANY: AC|USB|WIRELESS (7), and DOCK (15) since
        # Android 14.
        glob["stay_on_while_plugged_in"] = "15" if self.sdk >= 34 else "7"
        glob["ota_disable_automatic_update"] = "1"
        # configureUser: master sync off, location on.
        self.master_sync = False
        secure["location_mode"] = "3"

    # --- control API for the simulated technician and tests ---------------------------

    def request_testharness_reset(self) -> asyncio.Task[None] | None:
        """What `cmd testharness enable` does once it has answered (a phone that lies
        with reset "none" and no reboot does nothing at all and stays connected)."""
        lie = self.profile.lie
        if lie.reset == "none" and not lie.reboot:
            self.reset_answered = True
            return None
        return self.schedule_power_cycle("testharness")

    def perform_manual_factory_reset(self) -> asyncio.Task[None]:
        """Settings > System > Reset > Erase all data: wipes, forgets ADB keys, ADB off.
        ADB stops at once (the phone goes down); the power cycle does the rest."""
        self.adb_on = False
        return self.schedule_power_cycle("factory_reset")

    # --- settings with side effects (SettingsProvider observers) -----------------------

    def put_setting(self, namespace: str, key: str, value: str | None) -> None:
        """`settings put` (None: `settings delete`) and what the system does about it:
        adb_enabled starts or stops adbd (AdbService), location_mode is location."""
        table = self.settings[namespace]
        if key in self.profile.quirks.frozen_settings:
            return  # the write "succeeds" and changes nothing
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        if namespace == "global" and key == "adb_enabled":
            self.set_adb_enabled(value == "1")

    def set_adb_enabled(self, enabled: bool) -> None:
        """USB debugging on or off. Off stops adbd: connections drop once the current
        reply has gone out (the handler the server registered)."""
        was = self.adb_on
        if not enabled and self.profile.quirks.adb_stays_on:
            self.settings["global"]["adb_enabled"] = "0"
            return  # the setting moves, adbd keeps running
        self.adb_on = enabled
        self.settings["global"]["adb_enabled"] = "1" if enabled else "0"
        self._boot_runtime_props()
        if was and not enabled and self._adb_off_handler is not None:
            handler = self._adb_off_handler

            async def stop_adbd() -> None:
                await self.clock.sleep(POWER_CYCLE_DELAY)
                handler()

            task = asyncio.get_running_loop().create_task(stop_adbd())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def set_adb_off_handler(self, handler: Callable[[], None]) -> None:
        """The server's way to drop its connections when adbd stops."""
        self._adb_off_handler = handler

    def set_lock_screen_disabled(self, disabled: bool) -> bool:
        """`locksettings set-disabled`; False when a credential is set (not allowed)."""
        if self.is_device_secure():
            return False
        self.lock_screen = "none" if disabled else "swipe"
        self.settings["secure"]["lockscreen.disabled"] = "1" if disabled else "0"
        return True

    def set_location_enabled(self, enabled: bool) -> None:
        """LocationManager.setLocationEnabledForUser (`cmd location set-location-enabled`)."""
        self.settings["secure"]["location_mode"] = "3" if enabled else "0"

    def enable_usb_debugging(self) -> None:
        """The technician finishes setup, enables developer options and USB debugging."""
        self.setup_complete = True
        self.adb_on = True
        self.settings["secure"]["user_setup_complete"] = "1"
        self.settings["global"]["device_provisioned"] = "1"
        self.settings["global"]["adb_enabled"] = "1"
        self.settings["global"]["development_settings_enabled"] = "1"
        self._boot_runtime_props()

    def unplug(self) -> None:
        """The cable is pulled: ADB stops answering new connections."""
        self.plugged = False

    def plug(self) -> None:
        """The cable is back."""
        self.plugged = True

    # --- read-only state for tests ----------------------------------------------------

    def properties(self) -> dict[str, str]:
        """Every property as getprop sees it (build, persist, runtime)."""
        return {**self.build_props, **self.persist_props, **self.runtime_props}

    def account_list(self) -> list[Account]:
        """Accounts currently signed in."""
        return list(self.accounts)

    def third_party_packages(self) -> list[str]:
        """Names of the installed third-party packages."""
        return [p.name for p in self.packages if not p.system]

    def user_files(self) -> dict[str, bytes]:
        """User files (shell-visible path -> contents)."""
        return self.fs.user_files()

    def label_imeis(self) -> list[str]:
        """The IMEIs printed on the box / SIM tray (what a technician would scan)."""
        if self.telephony.label_imeis is not None:
            return list(self.telephony.label_imeis)
        return [i for i in self.telephony.device_ids if len(i) == 15 and i.isdigit()]

    def is_device_secure(self) -> bool:
        """KeyguardManager.isDeviceSecure(): a PIN, pattern or password is set."""
        return self.lock_screen in ("pin", "pattern", "password")

    def data_used_kb(self) -> int:
        """Used space on /data in KiB (data a lying phone hides from the shell still
        takes space: df tells)."""
        hidden = sum(len(d) for d in self.hidden_user_files.values())
        return (
            self.profile.storage.data_system_used_kb
            + self.user_data_kb + self.hidden_user_data_kb + self.hidden_apps_kb
            + sum(p.size_kb for p in self.packages if not p.system)
            + (self.fs.user_bytes() + hidden + 1023) // 1024
        )


def _setting_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _output(spec: OutputSpec) -> bytes:
    """The bytes of a configured answer (byte escapes applied, repeated to size)."""
    data = encode_value(decode_escapes(spec.text))
    if spec.repeat_to_bytes is not None and data:
        data = (data * (spec.repeat_to_bytes // len(data) + 1))[: spec.repeat_to_bytes]
    return data
