"""The lockdown services a simulated iPhone offers (after StartService, over TLS).

- com.apple.mobile.diagnostics_relay: IORegistry (battery), MobileGestalt, GasGauge,
  Restart / Shutdown / Sleep, Goodbye.
- com.apple.mobile.MCInstall: HelloHostIdentifier, Flush, GetCloudConfiguration,
  GetProfileList, EraseDevice (supervised phones only).
- com.apple.mobilebackup2: DeviceLink version exchange, Hello, EraseDevice.

Each handler reads plist requests until the host says goodbye or closes the connection.
"""

from __future__ import annotations

import logging
import plistlib
from typing import TYPE_CHECKING, Any

from wipeagent_sim.ios.wire import PlistChannel, WireError

if TYPE_CHECKING:
    from wipeagent_sim.ios.phone import SimIPhone

log = logging.getLogger(__name__)

SERVICE_DIAGNOSTICS = "com.apple.mobile.diagnostics_relay"
SERVICE_DIAGNOSTICS_OLD = "com.apple.iosdiagnostics.relay"
SERVICE_MCINSTALL = "com.apple.mobile.MCInstall"
SERVICE_BACKUP2 = "com.apple.mobilebackup2"
SERVICES = frozenset(
    {SERVICE_DIAGNOSTICS, SERVICE_DIAGNOSTICS_OLD, SERVICE_MCINSTALL, SERVICE_BACKUP2}
)

BATTERY_ENTRY_NAMES = frozenset({"AppleARMPMUCharger", "AppleSmartBattery", "AppleD2333PMU"})
DEVICELINK_VERSION = (300, 0)
BACKUP2_PROTOCOL_VERSIONS = (2.0, 2.1)


async def serve(service: str, phone: SimIPhone, channel: PlistChannel) -> None:
    """Run one service connection to completion."""
    if service in (SERVICE_DIAGNOSTICS, SERVICE_DIAGNOSTICS_OLD):
        await _diagnostics(phone, channel)
    elif service == SERVICE_MCINSTALL:
        await _mcinstall(phone, channel)
    elif service == SERVICE_BACKUP2:
        await _mobilebackup2(phone, channel)


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


# --- diagnostics_relay -----------------------------------------------------------------------


def _ioregistry(phone: SimIPhone, req: dict[str, Any]) -> dict[str, Any] | None:
    entry_class = req.get("EntryClass")
    entry_name = req.get("EntryName")
    plane = req.get("CurrentPlane")
    battery = dict(phone.profile.battery)
    if entry_class == "IOPMPowerSource" or entry_name in BATTERY_ENTRY_NAMES:
        return battery if battery else None
    if entry_class is None and entry_name is None and isinstance(plane, str):
        return {
            "name": "Root",
            "IORegistryEntryChildren": [
                {
                    "name": phone.profile.identity.hardware_model,
                    "IORegistryEntryChildren": [
                        {"name": "AppleARMPMUCharger", "IOObjectClass": "IOPMPowerSource"}
                    ],
                }
            ],
        }
    return None


async def _diagnostics(phone: SimIPhone, channel: PlistChannel) -> None:
    pending_power: str | None = None
    try:
        while True:
            req = await channel.recv_plist()
            if req is None:
                return
            name = req.get("Request")
            if name == "Goodbye":
                await channel.send_plist({"Status": "Success"})
                return
            if name == "IORegistry":
                entry = _ioregistry(phone, req)
                if entry is None:
                    await channel.send_plist({"Status": "Failure"})
                else:
                    await channel.send_plist(
                        {"Status": "Success", "Diagnostics": {"IORegistry": entry}}
                    )
            elif name == "MobileGestalt":
                keys = req.get("MobileGestaltKeys")
                if not isinstance(keys, list) or len(keys) > 1024:
                    await channel.send_plist({"Status": "Failure"})
                    continue
                if _version(phone.profile.identity.product_version) >= (17, 4):
                    gestalt: dict[str, Any] = {"Status": "MobileGestaltDeprecated"}
                else:
                    values = {**phone.default_domain(), **phone.profile.mobile_gestalt}
                    gestalt = {k: values[k] for k in keys if isinstance(k, str) and k in values}
                    gestalt["Status"] = "Success"
                await channel.send_plist(
                    {"Status": "Success", "Diagnostics": {"MobileGestalt": gestalt}}
                )
            elif name in ("All", "GasGauge"):
                battery = phone.profile.battery
                gas = {
                    "CycleCount": battery.get("CycleCount", 0),
                    "DesignCapacity": battery.get("DesignCapacity", 0),
                    "FullChargeCapacity": battery.get("NominalChargeCapacity", 0),
                    "Status": "Success",
                }
                await channel.send_plist({"Status": "Success", "Diagnostics": {"GasGauge": gas}})
            elif name in ("WiFi", "NAND"):
                await channel.send_plist(
                    {"Status": "Success", "Diagnostics": {name: {"Status": "Success"}}}
                )
            elif name in ("Restart", "Shutdown", "Sleep"):
                # The phone acts once the host closes the connection (as real phones do).
                pending_power = name
                await channel.send_plist({"Status": "Success"})
            else:
                await channel.send_plist({"Status": "UnknownRequest"})
    finally:
        if pending_power in ("Restart", "Shutdown"):
            phone.start_reboot()


# --- MCInstall -------------------------------------------------------------------------------


def _mc_error(code: int, text: str) -> dict[str, Any]:
    return {
        "Status": "Error",
        "ErrorChain": [
            {
                "ErrorCode": code,
                "ErrorDomain": "MCInstallationErrorDomain",
                "LocalizedDescription": text,
                "USEnglishDescription": text,
            }
        ],
    }


async def _mcinstall(phone: SimIPhone, channel: PlistChannel) -> None:
    while True:
        req = await channel.recv_plist()
        if req is None:
            return
        kind = req.get("RequestType")
        if kind in ("HelloHostIdentifier", "Flush"):
            await channel.send_plist({"Status": "Acknowledged"})
        elif kind == "GetCloudConfiguration":
            config = dict(phone.profile.cloud_configuration)
            config.setdefault("IsSupervised", phone.state.supervised)
            await channel.send_plist({"Status": "Acknowledged", "CloudConfiguration": config})
        elif kind == "GetProfileList":
            await channel.send_plist(
                {
                    "Status": "Acknowledged",
                    "OrderedIdentifiers": [],
                    "ProfileManifest": {},
                    "ProfileMetadata": {},
                }
            )
        elif kind == "EraseDevice":
            if not phone.state.supervised:
                await channel.send_plist(
                    _mc_error(12081, "The device must be supervised to erase it remotely.")
                )
                continue
            await channel.send_plist({"Status": "Acknowledged"})
            log.info("[iOS|%s] MCInstall EraseDevice", phone.udid)
            phone.start_erase()
            return
        else:
            await channel.send_plist(_mc_error(12001, f"Unsupported request {kind!r}"))


# --- mobilebackup2 over DeviceLink ------------------------------------------------------------


async def _dl_receive(channel: PlistChannel) -> list[Any] | None:
    msg = await channel.recv_plist_any()
    if msg is None:
        return None
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise WireError("DeviceLink message is not an array with a message name")
    return msg


async def _mobilebackup2(phone: SimIPhone, channel: PlistChannel) -> None:
    # DeviceLink: the device speaks first, in binary plists.
    await channel.send_plist(
        ["DLMessageVersionExchange", *DEVICELINK_VERSION], fmt=plistlib.FMT_BINARY
    )
    reply = await _dl_receive(channel)
    if reply is None or reply[:2] != ["DLMessageVersionExchange", "DLVersionsOk"]:
        raise WireError(f"DeviceLink version exchange refused: {reply!r}")
    await channel.send_plist(["DLMessageDeviceReady"], fmt=plistlib.FMT_BINARY)
    while True:
        msg = await _dl_receive(channel)
        if msg is None or msg[0] == "DLMessageDisconnect":
            return
        if msg[0] != "DLMessageProcessMessage" or len(msg) < 2 or not isinstance(msg[1], dict):
            await _dl_error(channel, -1, f"unexpected DeviceLink message {msg[0]!r}")
            continue
        body: dict[str, Any] = msg[1]
        name = body.get("MessageName")
        if name == "Hello":
            versions = body.get("SupportedProtocolVersions")
            common = [
                v for v in BACKUP2_PROTOCOL_VERSIONS if isinstance(versions, list) and v in versions
            ]
            if not common:
                await _dl_error(channel, 1, "no common protocol version")
                continue
            await channel.send_plist(
                [
                    "DLMessageProcessMessage",
                    {"MessageName": "Response", "ErrorCode": 0, "ProtocolVersion": max(common)},
                ],
                fmt=plistlib.FMT_BINARY,
            )
        elif name == "EraseDevice":
            target = body.get("TargetIdentifier")
            if target is not None and target != phone.udid:
                await _dl_error(channel, 2, "TargetIdentifier does not match this device")
                continue
            erase_cfg = phone.profile.erase
            if erase_cfg.mobilebackup2_error:
                await _dl_error(
                    channel,
                    erase_cfg.mobilebackup2_error,
                    erase_cfg.mobilebackup2_error_description or "Erase refused",
                )
                continue
            await channel.send_plist(
                ["DLMessageProcessMessage", {"MessageName": "Response", "ErrorCode": 0}],
                fmt=plistlib.FMT_BINARY,
            )
            log.info("[iOS|%s] mobilebackup2 EraseDevice", phone.udid)
            phone.start_erase()
            return
        else:
            await _dl_error(channel, -1, f"unsupported message {name!r}")


async def _dl_error(channel: PlistChannel, code: int, text: str) -> None:
    await channel.send_plist(
        [
            "DLMessageProcessMessage",
            {"MessageName": "Response", "ErrorCode": code, "ErrorDescription": text},
        ],
        fmt=plistlib.FMT_BINARY,
    )
