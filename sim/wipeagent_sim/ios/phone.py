"""A simulated iPhone: its state, lockdownd (port 62078) and the ports of started services.

The fake usbmuxd (`wipeagent_sim.ios.usbmuxd`) hands each accepted ``Connect`` to
`SimIPhone.accept`, which returns the handler of whatever "listens" on that port of the
phone: lockdownd on 62078, or a service that lockdownd started with ``StartService``
(one connection per start, as on a real phone).

Behaviour follows real lockdownd as seen by pymobiledevice3 and libimobiledevice:
an unpaired host reads only the basic identity values; pairing needs the person to tap
Trust; a session (StartSession) turns TLS on with the pair record's device certificate;
StopSession turns it off again; StartService answers a port and EnableServiceSSL.
Erase powers the phone off (usbmuxd reports Detached), forgets every pairing, regenerates
its identity key and comes back Unactivated after the profile's erase + reboot time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import ssl
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError
from wipeagent.identifiers import luhn_ok
from wipeagent_sim.ios import pki, services
from wipeagent_sim.ios.profile import Profile, State
from wipeagent_sim.ios.wire import ChannelClosed, PlistChannel, WireError

log = logging.getLogger(__name__)

LOCKDOWN_PORT = 62078

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
VisibilityListener = Callable[["SimIPhone", bool], None]

# What lockdownd gives a host that has no session (the `ideviceinfo -s` set), plus the
# public key a host needs in order to pair.
UNPAIRED_KEYS = frozenset(
    {
        "BasebandVersion",
        "BoardId",
        "BuildVersion",
        "CPUArchitecture",
        "ChipID",
        "DeviceClass",
        "DeviceColor",
        "DeviceName",
        "DieID",
        "HardwareModel",
        "HasSiDP",
        "PartitionType",
        "ProductName",
        "ProductType",
        "ProductVersion",
        "ProductionSOC",
        "ProtocolVersion",
        "SupportedDeviceFamilies",
        "TelephonyCapability",
        "UniqueChipID",
        "UniqueDeviceID",
        "WiFiAddress",
    }
)
UNPAIRED_SINGLE_KEYS = UNPAIRED_KEYS | {"DevicePublicKey"}

SERVICE_PORT_TTL = 300.0
"""Bench seconds a started service waits for its one connection (generous: a fast bench
clock shrinks it, and a loaded machine is slow to open the connection)."""

MAX_LOCKDOWN_FRAME = 256 * 1024

IDLE_TIMEOUT = 3600.0
"""Bench seconds a lockdown or service connection may sit idle before the phone drops it.
Generous on purpose: a fast bench clock shrinks it, and hosts pause between requests
(pymobiledevice3 generates RSA keys in the middle of pairing)."""


_UDID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{16}|[0-9a-f]{40}")


def _derive(seed: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:n], "big")


@dataclass
class _ServicePort:
    service: str
    pairing: pki.StoredPairing
    expires: float


@dataclass
class _Session:
    session_id: str
    pairing: pki.StoredPairing


@dataclass
class _Prompt:
    """The Trust dialog: None while the person has not answered."""

    answer: bool | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class SimIPhone:
    """One simulated iPhone. Create through `SimIPhone.create` (key generation is slow)."""

    def __init__(
        self,
        profile: Profile,
        clock: Clock,
        device_key: rsa.RSAPrivateKey,
        *,
        udid: str | None = None,
        seed: str = "0",
    ) -> None:
        self.profile = profile
        self.clock = clock
        self._key = device_key
        ident = profile.identity
        self.ecid = _derive(f"ecid/{profile.name}/{seed}", 7)
        if udid is not None:
            if not _UDID.fullmatch(udid):
                raise ConfigError(f"bad simulated UDID {udid!r}", hint="use 8-16 or 40 hex digits")
            self.udid = udid
        elif ident.chip_id >= 0x8000:
            # A12 and later: <ChipID:08X>-<ECID:016X>
            self.udid = f"{ident.chip_id:08X}-{self.ecid:016X}"
        else:
            # Older phones: 40 hex digits (a SHA-1 on real hardware).
            self.udid = hashlib.sha1(f"udid/{profile.name}/{seed}".encode()).hexdigest()  # noqa: S324
        chars = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
        num = _derive(f"serial/{self.udid}", 8)
        self.serial_number = "".join(chars[(num >> (5 * i)) % len(chars)] for i in range(12))
        mac = _derive(f"mac/{self.udid}", 5)
        self.wifi_address = "f0:" + ":".join(f"{(mac >> (8 * i)) & 0xFF:02x}" for i in range(5))
        # 14 digits (TAC + serial) and the Luhn check digit, as on a real phone.
        body = f"35{_derive(f'imei/{self.udid}', 6) % 10**12:012d}"
        self.imei = next(body + d for d in "0123456789" if luhn_ok(body + d))
        self.state: State = profile.state.model_copy()
        self.device_name = ident.device_name
        self.pairings: dict[str, pki.StoredPairing] = {}
        self.powered = True
        self.plugged = True
        self.erase_count = 0
        # Truth, whatever the phone says: the data volume was really wiped.
        self.data_wiped = False
        self.erased_once = False  # the phone answers as erased (values_after, udid_after)
        self._prompt: _Prompt | None = None
        self._trust_next: bool | None = None  # the person is ready to answer the next prompt
        self._ports: dict[int, _ServicePort] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._listeners: list[VisibilityListener] = []
        self._power_task: asyncio.Task[None] | None = None
        self._tls_cache: dict[str, ssl.SSLContext] = {}
        self._escrow: dict[str, bytes] = {}

    @classmethod
    async def create(
        cls, profile: Profile, clock: Clock, *, udid: str | None = None, seed: str = "0"
    ) -> SimIPhone:
        """Build a phone, generating its RSA identity key off the event loop."""
        key = await asyncio.to_thread(pki.generate_device_key)
        return cls(profile, clock, key, udid=udid, seed=seed)

    # --- visibility on the bus --------------------------------------------------------------

    @property
    def visible(self) -> bool:
        """Whether usbmuxd can see the phone (plugged in and booted)."""
        return self.powered and self.plugged

    def add_visibility_listener(self, listener: VisibilityListener) -> None:
        """Called with (phone, visible) whenever the phone appears or disappears."""
        self._listeners.append(listener)

    def remove_visibility_listener(self, listener: VisibilityListener) -> None:
        """Undo `add_visibility_listener`."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _set_visibility(self, change: Callable[[], None]) -> None:
        before = self.visible
        change()
        after = self.visible
        if before and not after:
            self._drop_connections()
        if before != after:
            for listener in list(self._listeners):
                listener(self, after)

    def _drop_connections(self) -> None:
        """The cable is gone or the phone is off: every connection dies at once."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._ports.clear()
        if self._prompt is not None and self._prompt.task is not None:
            self._prompt.task.cancel()
        self._prompt = None

    def unplug(self) -> None:
        """Pull the cable (the phone keeps its state)."""
        self._set_visibility(lambda: setattr(self, "plugged", False))

    def plug(self) -> None:
        """Plug the cable back in."""
        self._set_visibility(lambda: setattr(self, "plugged", True))

    # --- the person in front of the phone ----------------------------------------------------

    def trust(self) -> None:
        """Tap Trust on the prompt now showing, or on the next one that appears."""
        self._answer(True)

    def deny(self) -> None:
        """Tap Don't Trust on the prompt now showing, or on the next one."""
        self._answer(False)

    def unlock(self) -> None:
        """Enter the passcode: the phone is unlocked and may pair."""
        self.state = self.state.model_copy(update={"locked": False})

    def _answer(self, accept: bool) -> None:
        if self._prompt is not None and self._prompt.answer is None:
            self._prompt.answer = accept
            if self._prompt.task is not None:
                self._prompt.task.cancel()
        else:
            self._trust_next = accept

    def _show_prompt(self) -> _Prompt:
        prompt = _Prompt()
        if self._trust_next is not None:
            prompt.answer, self._trust_next = self._trust_next, None
        elif self.profile.trust.auto_accept:
            prompt.task = asyncio.get_running_loop().create_task(
                self._auto_answer(prompt, self.profile.trust.auto_accept_after)
            )
        log.info("[iOS|%s] Trust This Computer? prompt shown", self.udid)
        return prompt

    async def _auto_answer(self, prompt: _Prompt, delay: float) -> None:
        await self.clock.sleep(delay)
        if prompt.answer is None:
            prompt.answer = not self.profile.trust.deny

    # --- power ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while an erase or reboot is under way."""
        return self._power_task is not None and not self._power_task.done()

    def start_reboot(self) -> None:
        """Reboot (keeps pairings; a passcode phone is locked again until unlocked)."""
        self._start_power_cycle(erase=False)

    def start_erase(self) -> None:
        """Erase all content and settings, then reboot into Setup (Unactivated) (or what
        the profile's lying [erase] says instead)."""
        if self.profile.erase.acknowledge_only:
            log.info("[iOS|%s] acknowledges the erase and does nothing (lie)", self.udid)
            return
        self._start_power_cycle(erase=not self.profile.erase.reboot_only)

    def truth(self) -> dict[str, object]:
        """What really happened to the phone (tests and the fault matrix)."""
        return {"erased": self.data_wiped, "erase_count": self.erase_count,
                "visible": self.visible}

    def _start_power_cycle(self, *, erase: bool) -> None:
        if self.busy:
            return
        self._power_task = asyncio.get_running_loop().create_task(self._power_cycle(erase))

    async def _power_cycle(self, erase: bool) -> None:
        # Let the reply that triggered this reach the host before the link drops.
        await self.clock.sleep(0.5)
        self._set_visibility(lambda: setattr(self, "powered", False))
        log.info("[iOS|%s] %s", self.udid, "erasing" if erase else "rebooting")
        if erase:
            await self.clock.sleep(self.profile.power.erase_seconds)
            self._apply_erase(await asyncio.to_thread(pki.generate_device_key))
            if self.profile.faults.never_returns:
                log.info("[iOS|%s] stays off after the erase (fault)", self.udid)
                return
        await self.clock.sleep(self.profile.power.reboot_seconds)
        if not erase:
            self.state = self.state.model_copy(update={"locked": self.state.passcode_set})
        self._set_visibility(lambda: setattr(self, "powered", True))

    def _apply_erase(self, new_key: rsa.RSAPrivateKey) -> None:
        old = self.state
        lie = self.profile.erase
        after = lie.state_after
        if after is None:
            keep_lock = old.find_my and self.profile.erase.activation_lock_survives
            after = State(
                activation_state="Unactivated",
                find_my=keep_lock,
                passcode_set=False,
                locked=False,
                supervised=old.supervised and bool(self.profile.cloud_configuration),
                user_data_bytes=0,
                total_data_capacity=old.total_data_capacity,
            )
        if lie.keep_data:
            after = after.model_copy(update={"user_data_bytes": old.user_data_bytes})
        self.state = after
        if not lie.keep_pairings:
            self.pairings.clear()
            self._escrow.clear()
        self._tls_cache.clear()
        self._key = new_key
        self.device_name = "iPhone"
        self.erase_count += 1
        self.erased_once = True
        self.data_wiped = not (lie.keep_data or lie.keep_pairings)

    async def wait_idle(self) -> None:
        """Wait for a running erase/reboot to finish (no timeout: callers add one)."""
        if self._power_task is not None:
            await asyncio.shield(self._power_task)

    async def close(self) -> None:
        """Stop background tasks (bench shutdown)."""
        self._drop_connections()
        if self._power_task is not None:
            self._power_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._power_task

    # --- values -----------------------------------------------------------------------------

    def default_domain(self) -> dict[str, Any]:
        """Every value of the default lockdown domain (what a session host reads)."""
        ident = self.profile.identity
        st = self.state
        values: dict[str, Any] = {
            "ActivationState": st.activation_state,
            "ActivationStateAcknowledged": st.activation_state == "Activated",
            "BasebandVersion": "4.02.01",
            "BluetoothAddress": "f0:" + self.wifi_address[3:-2] + "aa",
            "BoardId": ident.board_id,
            "BrickState": False,
            "BuildVersion": ident.build_version,
            "CPUArchitecture": ident.cpu_architecture,
            "ChipID": ident.chip_id,
            "DeviceClass": ident.device_class,
            "DeviceColor": ident.device_color,
            "DeviceName": self.device_name,
            "DevicePublicKey": pki.device_public_key_pem(self._key),
            "DieID": self.ecid ^ 0x5A5A5A5A,
            "HardwareModel": ident.hardware_model,
            "HasSiDP": True,
            "HostAttached": True,
            "InternationalMobileEquipmentIdentity": self.imei,
            "ModelNumber": ident.model_number,
            "PartitionType": "GUID_partition_scheme",
            "PasswordProtected": st.passcode_set,
            "ProductName": ident.product_name,
            "ProductType": ident.product_type,
            "ProductVersion": ident.product_version,
            "ProductionSOC": True,
            "ProtocolVersion": "2",
            "RegionInfo": ident.region_info,
            "SerialNumber": self.serial_number,
            "SupportedDeviceFamilies": [1],
            "TelephonyCapability": True,
            "TimeIntervalSince1970": time.time(),
            "TimeZone": "Europe/Berlin",
            "TrustedHostAttached": True,
            "UniqueChipID": self.ecid,
            "UniqueDeviceID": self.udid,
            "WiFiAddress": self.wifi_address,
        }
        values.update(self.profile.extra_values)
        if self.erased_once:
            if self.profile.erase.udid_after:
                values["UniqueDeviceID"] = self.profile.erase.udid_after
            values.update(self.profile.erase.values_after)
        return values

    def domain(self, name: str) -> dict[str, Any] | None:
        """A named lockdown domain, or None if the phone has no such domain."""
        st = self.state
        battery = self.profile.battery
        domains: dict[str, dict[str, Any]] = {
            "com.apple.fmip": {"IsAssociated": st.find_my},
            "com.apple.mobile.chaperone": {"DeviceIsChaperoned": st.supervised},
            "com.apple.PurpleBuddy": {"SetupDone": st.activation_state == "Activated"},
            "com.apple.disk_usage": {
                "TotalDataCapacity": st.total_data_capacity,
                "TotalDataAvailable": st.total_data_capacity - st.user_data_bytes,
                "AmountDataAvailable": st.total_data_capacity - st.user_data_bytes,
                "TotalDiskCapacity": st.total_data_capacity + 8_000_000_000,
                "TotalSystemCapacity": 8_000_000_000,
            },
            "com.apple.mobile.battery": {
                "BatteryCurrentCapacity": battery.get("CurrentCapacity", 100),
                "BatteryIsCharging": battery.get("IsCharging", False),
                "ExternalChargeCapable": True,
                "ExternalConnected": battery.get("ExternalConnected", True),
                "FullyCharged": battery.get("FullyCharged", False),
                "GasGaugeCapability": True,
                "HasBattery": True,
            },
        }
        for extra_name, extra in self.profile.domains.items():
            domains.setdefault(extra_name, {}).update(extra)
        return domains.get(name)

    # --- connections --------------------------------------------------------------------------

    def accept(self, port: int) -> ConnectionHandler | None:
        """What answers a usbmuxd Connect to `port`; None = connection refused."""
        if not self.visible:
            return None
        if port == LOCKDOWN_PORT:
            return self._serve_lockdown
        entry = self._ports.pop(port, None)
        if entry is None or entry.expires < self.clock.monotonic():
            return None

        async def serve_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_service(entry, reader, writer)

        return serve_service

    def _tls_context(self, pairing: pki.StoredPairing) -> ssl.SSLContext:
        ctx = self._tls_cache.get(pairing.host_id)
        if ctx is None:
            ctx = pki.server_tls_context(
                pairing, self._key, max_version=self.profile.identity.tls_max_version
            )
            self._tls_cache[pairing.host_id] = ctx
        return ctx

    async def _serve_service(
        self, entry: _ServicePort, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        channel = PlistChannel(
            reader, writer, self.clock, max_frame=MAX_LOCKDOWN_FRAME, idle_timeout=IDLE_TIMEOUT
        )
        self._writers.add(writer)
        try:
            await channel.start_tls(self._tls_context(entry.pairing))
            await services.serve(entry.service, self, channel)
        except (ChannelClosed, WireError, TimeoutError, ConnectionError) as e:
            log.info("[iOS|%s] %s connection ended: %s", self.udid, entry.service, e)
        finally:
            self._writers.discard(writer)
            await channel.close()

    async def _serve_lockdown(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        channel = PlistChannel(
            reader, writer, self.clock, max_frame=MAX_LOCKDOWN_FRAME, idle_timeout=IDLE_TIMEOUT
        )
        self._writers.add(writer)
        conn = _LockdownConnection(self, channel)
        try:
            await conn.run()
        except (ChannelClosed, WireError, TimeoutError, ConnectionError) as e:
            log.info("[iOS|%s] lockdown connection ended: %s", self.udid, e)
        finally:
            self._writers.discard(writer)
            await channel.close()

    def _open_service_port(self, service: str, pairing: pki.StoredPairing) -> int:
        while True:
            port = 49152 + secrets.randbelow(65535 - 49152)
            if port not in self._ports and port != LOCKDOWN_PORT:
                break
        self._ports[port] = _ServicePort(
            service, pairing, self.clock.monotonic() + SERVICE_PORT_TTL
        )
        return port

    def escrow_bag_for(self, host_id: str) -> bytes | None:
        """The escrow bag issued to a paired host."""
        return self._escrow.get(host_id)


class _LockdownConnection:
    """One host connection to lockdownd: requests, pairing, session and TLS state."""

    def __init__(self, phone: SimIPhone, channel: PlistChannel) -> None:
        self.phone = phone
        self.channel = channel
        self.session: _Session | None = None

    async def run(self) -> None:
        while True:
            request = await self.channel.recv_plist()
            if request is None:
                return
            name = request.get("Request")
            if not isinstance(name, str):
                await self.channel.send_plist({"Error": "MissingRequest"})
                continue
            handler = getattr(self, f"_r_{name}", None)
            if handler is None:
                await self._error(name, "InvalidRequest")
                continue
            if await self._fault(name, request):
                return
            reply: dict[str, Any] | None = await handler(request)
            if name == "StartSession" and reply is not None and "Error" not in reply and (
                    self.phone.profile.faults.tls_failure):
                await self.channel.send_plist({"Request": name, **reply})
                # A TLS alert record (handshake_failure) instead of a ServerHello.
                await self.channel.send_bytes(bytes.fromhex("15030300020228"))
                return
            if reply is not None:
                await self.channel.send_plist({"Request": name, **reply})
            if name == "StartSession" and reply is not None and "Error" not in reply:
                assert self.session is not None
                await self.channel.start_tls(self.phone._tls_context(self.session.pairing))
            elif name == "StopSession" and reply is not None and "Error" not in reply:
                self.channel.mark_session_stopped()
            elif name == "Goodbye":
                return

    async def _fault(self, name: str, request: dict[str, Any]) -> bool:
        """Misbehave as the profile's [faults] say; True when the connection must end."""
        faults = self.phone.profile.faults
        whole_domain = (name == "GetValue" and self.session is not None
                        and request.get("Domain") is None and request.get("Key") is None)
        if whole_domain and faults.malformed_values:
            junk = b"<?xml version='1.0'?><plist><dict><key>Un"
            await self.channel.send_bytes(struct.pack(">I", len(junk)) + junk)
            return False
        if whole_domain and faults.oversized_frame:
            await self.channel.send_bytes(struct.pack(">I", 64 << 20) + bytes(1024))
            return True
        return False

    async def _error(self, name: str, error: str) -> None:
        await self.channel.send_plist({"Request": name, "Error": error})

    # Requests: each returns the reply body (without "Request") -------------------------------

    async def _r_QueryType(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Type": "com.apple.mobile.lockdown"}

    async def _r_Goodbye(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Result": "Success"}

    async def _r_GetValue(self, req: dict[str, Any]) -> dict[str, Any]:
        domain = req.get("Domain")
        key = req.get("Key")
        if (domain is not None and not isinstance(domain, str)) or (
            key is not None and not isinstance(key, str)
        ):
            return {"Error": "InvalidRequest"}
        paired = self.session is not None
        if domain:
            if not paired:
                return {"Error": "GetProhibited", "Domain": domain}
            values = self.phone.domain(domain)
            if values is None:
                return {"Error": "MissingValue", "Domain": domain}
        else:
            values = self.phone.default_domain()
            if not paired:
                if key is not None and key not in UNPAIRED_SINGLE_KEYS:
                    return {"Error": "GetProhibited", "Key": key}
                if key is None:
                    values = {k: v for k, v in values.items() if k in UNPAIRED_KEYS}
        out: dict[str, Any] = {}
        if domain:
            out["Domain"] = domain
        if key is None:
            out["Value"] = values
            return out
        out["Key"] = key
        if key not in values:
            out["Error"] = "MissingValue"
            return out
        out["Value"] = values[key]
        return out

    async def _r_SetValue(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.session is None:
            return {"Error": "SetProhibited"}
        if req.get("Domain") in (None, "") and req.get("Key") == "DeviceName":
            value = req.get("Value")
            if isinstance(value, str) and 0 < len(value) <= 255:
                self.phone.device_name = value
                return {}
        return {"Error": "SetProhibited"}

    async def _r_Pair(self, req: dict[str, Any]) -> dict[str, Any]:
        phone = self.phone
        record = req.get("PairRecord")
        if not isinstance(record, dict):
            return {"Error": "InvalidPairRecord"}
        if phone.state.locked:
            # A phone that was never unlocked since boot cannot show the Trust prompt.
            return {"Error": "PasswordProtected"}
        try:
            pairing = pki.check_pair_record(record, phone._key)
        except pki.PairRecordInvalid as e:
            log.info("[iOS|%s] Pair refused: %s", phone.udid, e)
            return {"Error": "InvalidPairRecord"}
        if pairing.host_id in phone.pairings:
            known = phone.pairings[pairing.host_id]
            if known.device_certificate == pairing.device_certificate:
                return {"EscrowBag": phone._escrow[pairing.host_id]}
        prompt = phone._prompt
        if prompt is None:
            prompt = phone._prompt = phone._show_prompt()
        if prompt.answer is None:
            return {"Error": "PairingDialogResponsePending"}
        phone._prompt = None
        if not prompt.answer:
            return {"Error": "UserDeniedPairing"}
        escrow = pki.new_escrow_bag()
        phone.pairings[pairing.host_id] = pairing
        phone._escrow[pairing.host_id] = escrow
        phone._tls_cache.pop(pairing.host_id, None)
        log.info("[iOS|%s] paired with host %s", phone.udid, pairing.host_id)
        return {"EscrowBag": escrow}

    async def _r_ValidatePair(self, req: dict[str, Any]) -> dict[str, Any]:
        record = req.get("PairRecord")
        host_id = record.get("HostID") if isinstance(record, dict) else None
        if not isinstance(host_id, str) or host_id not in self.phone.pairings:
            return {"Error": "InvalidHostID"}
        return {}

    async def _r_Unpair(self, req: dict[str, Any]) -> dict[str, Any]:
        record = req.get("PairRecord")
        host_id = record.get("HostID") if isinstance(record, dict) else None
        if not isinstance(host_id, str) or host_id not in self.phone.pairings:
            return {"Error": "InvalidHostID"}
        del self.phone.pairings[host_id]
        self.phone._escrow.pop(host_id, None)
        self.phone._tls_cache.pop(host_id, None)
        return {}

    async def _r_StartSession(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.session is not None:
            return {"Error": "SessionActive"}
        host_id = req.get("HostID")
        if not isinstance(host_id, str) or not host_id:
            return {"Error": "MissingHostID"}
        pairing = self.phone.pairings.get(host_id)
        if pairing is None:
            return {"Error": "InvalidHostID"}
        self.session = _Session(str(uuid.uuid4()).upper(), pairing)
        return {"SessionID": self.session.session_id, "EnableSessionSSL": True}

    async def _r_StopSession(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.session is None:
            return {"Error": "NoRunningSession"}
        if req.get("SessionID") != self.session.session_id:
            return {"Error": "InvalidSessionID"}
        self.session = None
        return {"Result": "Success"}

    async def _r_StartService(self, req: dict[str, Any]) -> dict[str, Any]:
        service = req.get("Service")
        if not isinstance(service, str):
            return {"Error": "MissingService"}
        if self.session is None:
            return {"Error": "SessionInactive", "Service": service}
        if service not in services.SERVICES:
            return {"Error": "InvalidService", "Service": service}
        pairing = self.session.pairing
        escrow = req.get("EscrowBag")
        if escrow is not None and escrow != self.phone.escrow_bag_for(pairing.host_id):
            return {"Error": "EscrowLocked", "Service": service}
        if service == services.SERVICE_BACKUP2 and self.phone.state.locked and escrow is None:
            return {"Error": "PasswordProtected", "Service": service}
        port = self.phone._open_service_port(service, pairing)
        return {"Service": service, "Port": port, "EnableServiceSSL": True}

    async def _r_EnterRecovery(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Error": "NotSupported"}
