"""`service call` on the simulated phone: the iphonesubinfo binder service and the Parcel
hex dump exactly as Android prints it.

- frameworks/native/cmds/service/service.cpp: arguments `i32 N`, `i64 N`, `s16 STR`, `f`,
  `d`, `null`; "service: Service NAME does not exist" (exit 10) when there is no such
  service; otherwise `Result: <reply Parcel>`.
- libbinder Parcel::print + printHexData (Debug.cpp) with HexDump's defaults (16 bytes a
  line, 4-byte groups, one line for up to 16 bytes): each group printed most significant
  byte first (a little-endian 32-bit word), then the bytes as text ('.' for the
  unprintable), `0x%08x: ` offsets and a leading newline only when the dump spans lines;
  the last line of a multi-line dump is padded with spaces.
- Reply of a Java binder method returning String: int32 0 (no exception) then a String16
  (int32 length in UTF-16 units or -1 for null, the units, a NUL, padding to 4 bytes);
  an exception: int32 code (-1 SecurityException), the message String16, int32 0 (no
  remote stack trace).
- IPhoneSubInfo's transaction codes per release: see wipeagent/platforms/android/imei.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wipeagent_sim.android.phone import SimAndroidPhone

SHELL_UID = 2000
SHELL_PACKAGE = "com.android.shell"
SERVICE_ERROR = 10  # service.cpp's `result = 10`
DENIED = ("getDeviceId: The user 2000 does not meet the requirements to access device "
          "identifiers.")


def string16(value: str | None) -> bytes:
    """Parcel::writeString16 (null as length -1)."""
    if value is None:
        return struct.pack("<i", -1)
    units = value.encode("utf-16-le")
    body = struct.pack("<i", len(units) // 2) + units + b"\x00\x00"
    return body + b"\x00" * (-len(body) % 4)


def reply_string(value: str | None) -> bytes:
    """A Java method's reply carrying one String."""
    return struct.pack("<i", 0) + string16(value)


def reply_exception(code: int, message: str) -> bytes:
    """Parcel.writeException: code, message, no remote stack trace."""
    return struct.pack("<i", code) + string16(message) + struct.pack("<i", 0)


def hex_dump(data: bytes, bytes_per_line: int = 16, cutoff: int = 16) -> str:
    """printHexData(indent 0, alignment 4, not C style) as `Parcel(...)` shows it, with
    TextOutput's indent of two spaces for the lines of a multi-line dump."""
    if not data:
        return "NULL"
    one_line = len(data) <= cutoff
    lines: list[str] = []
    for offset in range(0, len(data), bytes_per_line):
        chunk = data[offset:offset + bytes_per_line]
        groups: list[str] = []
        for start in range(0, bytes_per_line, 4):
            group = chunk[start:start + 4]
            if group:
                text = group[::-1].hex()
                groups.append(text + "  " * (4 - len(group)) if not one_line else text)
            elif not one_line:
                groups.append("        ")
        shown = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        if not one_line:
            shown += " " * (bytes_per_line - len(chunk))
        line = " ".join(groups) + f" '{shown}'"
        lines.append(line if one_line else f"0x{offset:08x}: {line}")
    if one_line:
        return lines[0]
    return "\n" + "\n".join(f"  {line}" for line in lines)


@dataclass
class CallArgs:
    """The arguments of `service call` after the code, as typed values."""

    values: list[int | str | None]
    error: str = ""


def parse_args(words: list[str]) -> CallArgs:
    """i32 / i64 / s16 / f / d / null, as service.cpp reads them."""
    values: list[int | str | None] = []
    i = 0
    while i < len(words):
        kind = words[i]
        if kind == "null":
            values.append(None)
            i += 1
            continue
        if kind not in ("i32", "i64", "s16", "f", "d"):
            return CallArgs(values, f"service: unknown option {kind}")
        if i + 1 >= len(words):
            noun = {"i32": "integer", "i64": "integer", "s16": "string"}.get(kind, "number")
            return CallArgs(values, f"service: no {noun} supplied for '{kind}'")
        raw = words[i + 1]
        if kind in ("i32", "i64"):
            digits = raw.lstrip("-")
            values.append(int(raw) if digits.isdigit() else 0)  # atoi
        elif kind == "s16":
            values.append(raw)
        else:
            values.append(0)
        i += 2
    return CallArgs(values)


def _arg(args: list[int | str | None], index: int) -> int | str | None:
    # A Parcel read past its end gives 0 / null.
    return args[index] if index < len(args) else None


def iphonesubinfo(phone: SimAndroidPhone, code: int, args: list[int | str | None]) -> bytes:
    """The reply of IPhoneSubInfo transaction `code` on this phone's Android version."""
    sdk = phone.sdk
    if sdk >= 30:
        # getDeviceId, getDeviceIdWithFeature, getNaiForSubscriber, getDeviceIdForPhone ...
        methods = {1: ("default", 0), 2: ("default", 0), 3: ("nai", 0),
                   4: ("for_phone", 0), 5: ("imei_for_sub", 0)}
    elif sdk >= 23:
        # getDeviceId, getNaiForSubscriber, getDeviceIdForPhone, getImeiForSubscriber ...
        methods = {1: ("default", 0), 2: ("nai", 0), 3: ("for_phone", 0),
                   4: ("imei_for_sub", 0)}
    else:
        methods = {1: ("default_noarg", 0)}
    if code not in methods:
        return b""  # UNKNOWN_TRANSACTION: the reply stays empty
    method = methods[code][0]
    tel = phone.telephony
    if method == "nai":
        return reply_string(None)
    package_index = {"default": 0, "for_phone": 1, "imei_for_sub": 1}.get(method)
    if package_index is not None and sdk >= 23:
        package = _arg(args, package_index)
        if package != SHELL_PACKAGE:
            # AppOpsManager.checkPackage: the package must belong to the calling uid.
            return reply_exception(-1, f"Package {package} does not belong to {SHELL_UID}")
    if tel.answer == "security_exception":
        return reply_exception(-1, DENIED)
    if tel.answer == "null" or not tel.device_ids:
        return reply_string(None)
    slot = 0
    if method in ("for_phone", "imei_for_sub"):
        requested = _arg(args, 0)
        slot = requested if isinstance(requested, int) else 0
        if not 0 <= slot < len(tel.device_ids):
            slot = 0  # PhoneSubInfoController: an invalid phoneId is served as 0
    value = tel.device_ids[slot]
    if method == "imei_for_sub" and not (len(value) == 15 and value.isdigit()):
        return reply_string(None)  # a CDMA slot has no IMEI
    return reply_string(value)


def service_call(phone: SimAndroidPhone, words: list[str]) -> tuple[str, str, int]:
    """`service call SERVICE CODE ARGS...`: (stdout, stderr, exit status)."""
    if len(words) < 2:
        which = "No service specified for call" if words else "No code specified for call"
        return "", f"service: {which}\n", SERVICE_ERROR
    name, code_text, rest = words[0], words[1], words[2:]
    if name != "iphonesubinfo" or phone.telephony.answer == "no_service":
        return "", f"service: Service {name} does not exist\n", SERVICE_ERROR
    parsed = parse_args(rest)
    if parsed.error:
        return "", parsed.error + "\n", SERVICE_ERROR
    digits = code_text.lstrip("-")
    code = int(code_text) if digits.isdigit() else 0
    data = iphonesubinfo(phone, code, parsed.values)
    return f"Result: Parcel({hex_dump(data)})\n", "", 0


def dumpsys_iphonesubinfo(phone: SimAndroidPhone) -> str:
    """PhoneSubInfo.dump before Android 6; later versions print nothing here."""
    tel = phone.telephony
    if phone.sdk >= 23 or tel.answer == "no_service":
        return ""
    device_id = tel.device_ids[0] if tel.device_ids and tel.answer == "value" else "null"
    return f"Phone Subscriber Info:\n  Phone Type = GSM\n  Device ID = {device_id}\n"
