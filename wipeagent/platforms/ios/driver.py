"""The iOS platform driver: identify, diagnose, plan, mark, erase, return, verify.

Talks to one iPhone through `wipeagent.transports.ios` (lockdown over usbmuxd); every
value it reads is validated in `parse`, turned into checks in `checks`. This module does
the I/O and the waiting; every wait goes through the Clock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

from pymobiledevice3 import usbmux
from pymobiledevice3.services.diagnostics import DiagnosticsService
from pymobiledevice3.services.mobile_config import MobileConfigService
from pymobiledevice3.services.mobilebackup2 import Mobilebackup2Service

from wipeagent.clock import Clock
from wipeagent.errors import (
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    IdentityMismatch,
    ProtocolError,
)
from wipeagent.models import (
    Canary,
    CheckResult,
    DeviceIdentity,
    ErasePlan,
    HandoffItem,
    Platform,
    Refusal,
)
from wipeagent.platforms.base import ErasePolicy
from wipeagent.platforms.ios import checks
from wipeagent.platforms.ios import handoff as ho
from wipeagent.platforms.ios.parse import (
    ACTIVATION_RE,
    DiskUsage,
    Management,
    boolean,
    identity_from_values,
    key_fingerprint,
    parse_battery,
    parse_disk_usage,
    parse_management,
    text,
)
from wipeagent.transports.ios import (
    USBMUXD_HINT,
    IosConnection,
    IosSettings,
    UsbmuxAddress,
    connect_ios,
    delete_pair_record,
    load_pair_record,
    mapped_errors,
    pairing_known,
)

log = logging.getLogger(__name__)

# Canary "settings": what the bench observed before the erase, journaled so a resumed
# session compares against the same values.
KEY_FP = "ios.device_public_key_sha256"
HOST_ID = "ios.host_id"
SYSTEM_BUID = "ios.system_buid"
USED_BYTES = "ios.used_bytes"
ACTIVATION_BEFORE = "ios.activation_state"
MUX_DEVICE_ID = "ios.usbmux_device_id"
HOST_BOOT_ID = "host.boot_id"
HOST_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
DEVICELINK_VERSION = 300
BACKUP2_VERSIONS = [2.0, 2.1]


class IosDriver:
    """PlatformDriver for one iPhone reached through usbmuxd (see platforms.base)."""

    platform = Platform.IOS

    def __init__(self, udid: str, address: UsbmuxAddress, record_dir: Path, clock: Clock,
                 settings: IosSettings | None = None) -> None:
        self.udid = udid
        self.address = address
        self.record_dir = record_dir
        self.clock = clock
        self.settings = settings or IosSettings()
        self._conn: IosConnection | None = None
        self._values: dict[str, Any] | None = None
        self._disk: DiskUsage | None = None

    def _tag(self) -> str:
        return f"[iOS|{self.udid}]"

    async def _connection(self) -> IosConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect_when_answering()
            self._values = None
        return self._conn

    async def _connect_when_answering(self) -> IosConnection:
        """Connect (and pair); while usbmuxd lists the phone but lockdown does not answer
        yet (a phone still booting: it is attached before lockdownd listens), try again
        for up to connect_timeout_s instead of giving up on a phone that is present."""
        deadline = self.clock.monotonic() + self.settings.connect_timeout_s
        while True:
            try:
                return await connect_ios(self.udid, self.address, self.record_dir,
                                         self.clock, self.settings)
            except DeviceGone as exc:
                if self.clock.monotonic() >= deadline or await self._listed() is not True:
                    raise
                log.info("%s listed but lockdown not answering yet: %s", self._tag(), exc)
            await self.clock.sleep(self.settings.poll_interval_s)

    async def connect(self) -> None:
        """Reach the phone and pair (waits for Trust up to pair_timeout_s)."""
        await self._connection()

    # ------------------------------------------------------------------ identify

    async def _domain(self, name: str) -> dict[str, Any] | None:
        conn = await self._connection()
        value = await conn.get_value(name)
        return value if isinstance(value, dict) else None

    async def identify(self) -> DeviceIdentity:
        """Default lockdown domain (paired session) + disk usage, validated."""
        conn = await self._connection()
        values = await conn.refresh_values()
        self._disk = parse_disk_usage(await self._domain("com.apple.disk_usage"))
        identity = identity_from_values(values, self._disk.disk_bytes)
        if identity.udid != self.udid:
            raise IdentityMismatch(f"usbmuxd device {self.udid} answered as {identity.udid}")
        self._values = values
        log.info("%s %s (%s) serial %s iOS %s", self._tag(), identity.marketing_name,
                 identity.model, identity.serial, identity.os_version)
        return identity

    # ------------------------------------------------------------------ diagnose

    async def diagnose(self, identity: DeviceIdentity) -> list[CheckResult]:
        """Battery, storage, Find My, activation, passcode, supervision, MDM."""
        conn = await self._connection()
        values = self._values if self._values is not None else await conn.refresh_values()
        results = [checks.os_check(identity)]
        try:
            async with conn.service(DiagnosticsService) as diag:
                entry = await conn.call("IORegistry battery", diag.get_battery())
            results.append(checks.battery_check(parse_battery(entry)))
        except (ProtocolError, DeviceError) as exc:
            if isinstance(exc, DeviceGone | DeviceTimeout):
                raise
            results.append(checks.error(checks.BATTERY, "Battery", "diagnostics_relay "
                                        "IORegistry IOPMPowerSource", str(exc)))
        disk = self._disk or parse_disk_usage(await self._domain("com.apple.disk_usage"))
        results.append(checks.storage_check(disk))
        fmip = await self._domain("com.apple.fmip")
        results.append(checks.find_my_check(boolean(fmip.get("IsAssociated")) if fmip else None))
        results.append(checks.activation_check(text(values, "ActivationState", ACTIVATION_RE)))
        results.append(checks.passcode_check(boolean(values.get("PasswordProtected"))))
        management = await self._management(conn)
        results.append(checks.supervision_check(management))
        results.append(checks.mdm_check(management))
        return results

    # ------------------------------------------------------------------ plan

    def plan_erase(self, identity: DeviceIdentity, diagnostics: list[CheckResult],
                   policy: ErasePolicy) -> tuple[list[CheckResult], ErasePlan | Refusal]:
        """Pure: see wipeagent.platforms.ios.checks.plan_erase."""
        return checks.plan_erase(identity, diagnostics, policy,
                                 return_timeout_s=self.settings.reboot_timeout_s)

    # ------------------------------------------------------------------ marker

    async def plant_canary(self) -> Canary:
        """Plant nothing (no writable user area over lockdown without AFC); record what
        the erase must change, journaled before it starts so that a resumed session tests
        the same things: the pairing (HostID, SystemBUID) and identity key this bench
        expects the erase to destroy, the used space it expects to be freed, the
        activation state, and usbmuxd's DeviceID of this attachment (a phone that
        restarts leaves the bus and comes back under a new one)."""
        conn = await self._connection()
        fp = key_fingerprint(await conn.get_value(key="DevicePublicKey"))
        if fp is None:
            raise ProtocolError("the phone gave no usable DevicePublicKey")
        disk = parse_disk_usage(await self._domain("com.apple.disk_usage"))
        values = await conn.refresh_values()
        marks = {KEY_FP: fp, HOST_ID: conn.host_id, SYSTEM_BUID: conn.system_buid,
                 ACTIVATION_BEFORE: text(values, "ActivationState", ACTIVATION_RE)}
        if disk.used_bytes is not None:
            marks[USED_BYTES] = str(disk.used_bytes)
        device_id = await self._device_id()
        if device_id is None:
            # Without it the restart could not be checked after the erase: better to stop
            # now, with nothing erased, than to end unverifiable afterwards.
            raise DeviceGone("usbmuxd does not list the phone (its DeviceID is needed "
                             "before the erase)", hint=USBMUXD_HINT)
        marks[MUX_DEVICE_ID] = str(device_id)
        host_boot = _host_boot_id()
        if host_boot:
            marks[HOST_BOOT_ID] = host_boot
        return Canary(files=(), settings=marks, token=secrets.token_hex(16))

    # ------------------------------------------------------------------ erase

    async def start_erase(self, plan: ErasePlan) -> None:
        """Send EraseDevice over the planned service; returns once the phone accepted it."""
        conn = await self._connection()
        if plan.method_id == checks.METHOD_MCINSTALL:
            async with conn.service(MobileConfigService) as mc:
                await conn.call("MCInstall HelloHostIdentifier", mc.hello())
                await conn.call("MCInstall EraseDevice", mc.erase_device(
                    preserve_data_plan=False, disallow_proximity_setup=True))
        elif plan.method_id == checks.METHOD_BACKUP2:
            await self._backup2_erase(conn)
        else:
            raise DeviceError(f"unknown iOS erase method {plan.method_id!r}")
        log.info("%s erase accepted; the phone will restart into Setup", self._tag())

    async def _backup2_erase(self, conn: IosConnection) -> None:
        """DeviceLink by hand: only the messages EraseDevice needs. pymobiledevice3's
        dl_loop would also serve a phone's file requests (upload/download into a backup
        directory), which a phone being erased has no business making."""
        async with conn.service(Mobilebackup2Service) as mb:
            sc = mb._service
            if sc is None:
                raise DeviceGone("mobilebackup2 did not connect")

            async def recv() -> list[Any]:
                msg = await conn.call("DeviceLink receive", sc.recv_plist())
                if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
                    raise ProtocolError("DeviceLink: a message that is not [name, ...]")
                return msg

            hello = await recv()
            if hello[0] != "DLMessageVersionExchange" or len(hello) < 2 or not isinstance(
                    hello[1], int) or hello[1] < DEVICELINK_VERSION:
                raise ProtocolError(f"DeviceLink: unexpected version exchange {hello[0][:40]!r}")
            await conn.call("DeviceLink versions", sc.send_plist(
                ["DLMessageVersionExchange", "DLVersionsOk", hello[1]]))
            if (await recv())[0] != "DLMessageDeviceReady":
                raise ProtocolError("DeviceLink: the phone did not report ready")

            async def process(body: dict[str, Any]) -> dict[str, Any]:
                await conn.call("DeviceLink send", sc.send_plist(
                    ["DLMessageProcessMessage", body]))
                reply = await recv()
                if reply[0] != "DLMessageProcessMessage" or len(reply) < 2 or not isinstance(
                        reply[1], dict):
                    raise ProtocolError(f"DeviceLink: unexpected {reply[0][:40]!r}")
                return reply[1]

            answer = await process({"MessageName": "Hello",
                                    "SupportedProtocolVersions": BACKUP2_VERSIONS})
            if answer.get("ErrorCode") != 0:
                raise ProtocolError("mobilebackup2: no common protocol version")
            answer = await process({"MessageName": "EraseDevice", "TargetIdentifier": self.udid})
            code = answer.get("ErrorCode")
            if code != 0:
                said = answer.get("ErrorDescription")
                said = said[:120] if isinstance(said, str) else ""
                raise DeviceError(f"the phone refused mobilebackup2 EraseDevice: error "
                                  f"{code!r} {said!r}",
                                  hint="the phone refused the erase: set it aside for inspection")

    # ------------------------------------------------------------------ return

    async def _listed(self) -> bool | None:
        """Whether usbmuxd lists the phone (None: usbmuxd not reachable right now)."""
        devices = await self._mux_devices()
        return None if devices is None else any(d.matches_udid(self.udid) for d in devices)

    async def _device_id(self) -> int | None:
        """usbmuxd's DeviceID of the phone's current attachment (None: not listed)."""
        for device in await self._mux_devices() or []:
            if device.matches_udid(self.udid) and device.is_usb:
                devid = device.devid
                return devid if isinstance(devid, int) and not isinstance(devid, bool) \
                    else None
        return None

    async def _mux_devices(self) -> list[usbmux.MuxDevice] | None:
        try:
            with mapped_errors("usbmuxd ListDevices", usbmuxd=self.address):
                devices: list[usbmux.MuxDevice] = await self.clock.wait_for(
                    usbmux.list_devices(usbmux_address=self.address.library),
                    self.settings.command_timeout_s)
        except DeviceError:
            return None
        return devices

    async def await_return(self, expected: DeviceIdentity, plan: ErasePlan) -> DeviceIdentity:
        """Wait for the phone to leave and come back, pair again (a new pairing: the phone
        forgot the old one) and check its identity before anything else runs."""
        deadline = self.clock.monotonic() + plan.return_timeout_s

        def remaining() -> float:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise DeviceTimeout(
                    f"the iPhone did not restart and come back within "
                    f"{plan.return_timeout_s:.0f} s",
                    hint="check the phone's screen; unplug it and plug it in again")
            return left

        if self._conn is not None:
            await self._conn.close()
        self._conn = None
        self._values = None
        poll = self.settings.poll_interval_s
        # 1. Gone first, or we would verify the phone before its erase.
        while await self._listed() is not False:
            await self.clock.sleep(min(poll, remaining()))
        log.info("%s went away", self._tag())
        # 2. Back on the bus with lockdown answering: pair again (the technician may have
        #    to tap Trust) and identify.
        while True:
            remaining()
            if await self._listed():
                try:
                    self._conn = await connect_ios(self.udid, self.address, self.record_dir,
                                                   self.clock, self.settings)
                    break
                except (DeviceGone, DeviceTimeout) as exc:
                    log.debug("%s not back yet: %s", self._tag(), exc)
            await self.clock.sleep(min(poll, remaining()))
        found = await self.identify()
        differing = expected.mismatches(found)
        if differing:
            await self.close()
            raise IdentityMismatch(
                "a different phone answered after the erase: " + ", ".join(differing))
        return found

    # ------------------------------------------------------------------ verify

    async def verify(self, identity: DeviceIdentity, plan: ErasePlan,
                     canary: Canary) -> list[CheckResult]:
        """Validation (the pre-erase pairing is gone, the used space was freed) and
        verification (new identity key, unactivated, the phone left the bus), plus what
        the phone says about Find My and MDM now. Every comparison is with what was
        journaled before the erase (`canary.settings`), so a session resumed after an
        agent restart tests exactly what an uninterrupted one would."""
        conn = await self._connection()
        values = await conn.refresh_values()
        self._values = values
        marks = canary.settings
        host_id = marks.get(HOST_ID, "")
        old_known: bool | None = None
        if host_id:
            old_known = await pairing_known(
                self.udid, self.address, self.record_dir, self.clock, self.settings,
                host_id=host_id, system_buid=marks.get(SYSTEM_BUID, conn.system_buid))
        if host_id and host_id == conn.host_id:
            # Our current session runs on the pre-erase pairing: the phone kept it.
            old_known = True
        key_after = key_fingerprint(await conn.get_value(key="DevicePublicKey"))
        results = [
            checks.old_pairing_rejected(None if old_known is None else not old_known, host_id),
            checks.identity_key_changed(marks.get(KEY_FP), key_after),
        ]
        buddy = await self._domain("com.apple.PurpleBuddy")
        results.append(checks.unactivated(
            text(values, "ActivationState", ACTIVATION_RE),
            boolean(buddy.get("SetupDone")) if buddy else None))
        results.append(checks.left_the_bus(
            _int_mark(marks.get(MUX_DEVICE_ID)), await self._device_id(),
            host_restarted=HOST_BOOT_ID in marks and marks[HOST_BOOT_ID] != _host_boot_id()))
        results.append(checks.cryptographic_erase(plan))
        results.append(checks.storage_after(
            _int_mark(marks.get(USED_BYTES)),
            parse_disk_usage(await self._domain("com.apple.disk_usage")),
            activated_before=marks.get(ACTIVATION_BEFORE) == "Activated"))
        fmip = await self._domain("com.apple.fmip")
        results.append(checks.find_my_after(boolean(fmip.get("IsAssociated")) if fmip else None))
        results.append(checks.mdm_check(await self._management(conn), after=True))
        return results

    async def _management(self, conn: IosConnection) -> Management:
        """Supervision / MDM state: the chaperone domain plus MCInstall's cloud
        configuration (when the phone offers MCInstall; a lost phone still raises)."""
        chaperone = await self._domain("com.apple.mobile.chaperone")
        cloud: Any = None
        try:
            async with conn.service(MobileConfigService) as mc:
                cloud = await conn.call("MCInstall GetCloudConfiguration",
                                        mc.get_cloud_configuration())
        except DeviceError as exc:
            if isinstance(exc, DeviceGone | DeviceTimeout):
                raise
            log.warning("%s MCInstall unavailable: %s", self._tag(), exc)
        return parse_management(chaperone, cloud)

    # ------------------------------------------------------------------ hand-off

    async def hand_off(self, plan: ErasePlan) -> list[HandoffItem]:
        """Record the state the phone leaves in (Setup Assistant, activation, Find My as
        far as lockdown tells), then make it forget this bench (see ios.handoff)."""
        conn = await self._connection()
        values = await conn.refresh_values()
        buddy = await self._domain("com.apple.PurpleBuddy")
        fmip = await self._domain("com.apple.fmip")
        items = [
            ho.setup_item(boolean(buddy.get("SetupDone")) if buddy else None),
            ho.activation_item(text(values, "ActivationState", ACTIVATION_RE)),
            ho.activation_lock_item(boolean(fmip.get("IsAssociated")) if fmip else None),
        ]
        record = await asyncio.to_thread(load_pair_record, self.record_dir, self.udid)
        try:
            await conn.unpair()
        except DeviceError as exc:
            if isinstance(exc, DeviceGone | DeviceTimeout):
                raise
            items.append(ho.pairing_item(None, f"Unpair refused: {exc}"))
            return items
        await self.close()
        rejected = await self._pairing_rejected(record)
        await asyncio.to_thread(delete_pair_record, self.record_dir, self.udid)
        items.append(ho.pairing_item(rejected))
        return items

    async def _pairing_rejected(self, record: dict[str, Any] | None) -> bool | None:
        """StartSession with this bench's record: refused (True), accepted (False)."""
        if not record:
            return None
        probe = await connect_ios(self.udid, self.address, self.record_dir, self.clock,
                                  self.settings, pair=False, pair_record=record)
        try:
            return not probe.paired
        finally:
            await probe.close()

    async def finish_hand_off(self) -> HandoffItem | None:
        """Nothing left to switch off on an iPhone: unpairing was the last step."""
        return None

    async def reachable_with_bench_key(self, within_s: float) -> bool:
        """Does the phone still accept this bench's pairing?"""
        record = await asyncio.to_thread(load_pair_record, self.record_dir, self.udid)
        if await self._listed() is not True or not record:
            return False
        return await self._pairing_rejected(record) is False

    async def wait_until_gone(self, timeout_s: float) -> bool:
        """Wait until usbmuxd no longer lists the phone."""
        deadline = self.clock.monotonic() + timeout_s
        while self.clock.monotonic() < deadline:
            if await self._listed() is False:
                return True
            await self.clock.sleep(self.settings.poll_interval_s)
        return False

    async def close(self) -> None:
        """Release the connection. Never raises."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


def _int_mark(value: str | None) -> int | None:
    """A journaled integer mark (decimal text), None when absent or not a number."""
    return int(value) if value is not None and value.isdigit() and len(value) < 20 else None


def _host_boot_id() -> str:
    """This bench PC's boot id (Linux): usbmuxd numbers attachments afresh after a PC
    restart, so DeviceIDs from before it say nothing."""
    try:
        return HOST_BOOT_ID_PATH.read_text(encoding="ascii").strip()[:64]
    except (OSError, UnicodeError):
        return ""
