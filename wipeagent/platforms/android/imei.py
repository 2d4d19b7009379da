"""The IMEI(s) and MEID of an Android phone, asked over ADB the way each version answers.

There is no `getprop` for the IMEI. The shell user (uid 2000, which holds
READ_PRIVILEGED_PHONE_STATE) can ask the telephony service `iphonesubinfo` directly with
`service call` (frameworks/native/cmds/service/service.cpp): the transaction code is the
1-based position of the method in `IPhoneSubInfo.aidl`
(frameworks/base/telephony/java/com/android/internal/telephony/IPhoneSubInfo.aidl), and
that position has moved between releases:

- Android 5 (API 21-22): code 1, `getDeviceId()` (the default phone only);
  `dumpsys iphonesubinfo` ("Device ID = ...") as a fallback.
- Android 6-10 (API 23-29): code 3, `getDeviceIdForPhone(int phoneId, String
  callingPackage)`, after `getDeviceId` and `getNaiForSubscriber`.
- Android 11-15 (API 30-35): code 4, `getDeviceIdForPhone(int phoneId, String
  callingPackage, String callingFeatureId)`, after `getDeviceId`,
  `getDeviceIdWithFeature` and `getNaiForSubscriber`.

`getDeviceIdForPhone` answers the IMEI of a GSM/UMTS/LTE/NR phone and the MEID of a
CDMA one, per SIM slot (phoneId 0 and 1 on a dual-SIM phone). A phoneId the phone does
not have is served as phoneId 0 (PhoneSubInfoController), so a single-SIM phone answers
the same IMEI twice. The callingFeatureId is left out: a Parcel read past its end gives
null, which is what an app without an attribution tag sends.

`service call` prints the reply Parcel as a hex dump (libbinder Parcel::print and
printHexData: "Result: Parcel(" then 16 bytes a line as four little-endian 32-bit words,
or on one line when the reply has at most 16 bytes). The reply is the exception code
(0: none; -1: SecurityException ...) then a String16: int32 length in UTF-16 units
(-1 for null), the units, a NUL, padding to 4 bytes. OEM builds have inserted methods
into the interface (a "getPesn" at position 3 on some), which is why every answer is
validated as an IMEI (15 digits with their Luhn check digit) or a MEID (14 hex digits)
and anything else is kept out of the identity, never "cleaned up".

Everything here is pure: the driver runs the commands and hands the bytes in.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from enum import StrEnum

from wipeagent.errors import BadDeviceData
from wipeagent.identifiers import valid_imei, valid_meid
from wipeagent.platforms.android.parse import decode_text

SHELL_PACKAGE = "com.android.shell"
SIM_SLOTS = (0, 1)  # multi-SIM phones have two (AOSP supports more; none we meet do)
MAX_DUMP_BYTES = 16 * 1024  # a String16 IMEI reply is under 200 bytes of dump
MAX_PARCEL_BYTES = 1024
MAX_ID_CHARS = 64
DUMPSYS_IPHONESUBINFO = "dumpsys iphonesubinfo"

# Exception codes of android.os.Parcel (writeException / readExceptionCode).
EX_SECURITY = -1
EX_HAS_NOTED_APPOPS_REPLY_HEADER = -127
EX_HAS_STRICTMODE_REPLY_HEADER = -128
_EXCEPTION_NAMES = {
    -1: "SecurityException", -2: "BadParcelableException", -3: "IllegalArgumentException",
    -4: "NullPointerException", -5: "IllegalStateException",
    -6: "NetworkOnMainThreadException", -7: "UnsupportedOperationException",
    -8: "ServiceSpecificException", -9: "ParcelableException",
}  # fmt: skip


@dataclass(frozen=True)
class ImeiQuery:
    """One question to the phone: the exact command and what it asks."""

    slot: int | None  # SIM slot (phoneId); None: the default phone
    command: str
    method: str  # the IPhoneSubInfo method and its transaction code, for the evidence


def imei_queries(sdk: int) -> tuple[ImeiQuery, ...]:
    """The `service call` commands for this API level (see the module table)."""
    if sdk >= 30:
        return tuple(
            ImeiQuery(slot, f"service call iphonesubinfo 4 i32 {slot} s16 {SHELL_PACKAGE}",
                      "IPhoneSubInfo.getDeviceIdForPhone (transaction 4, Android 11+)")
            for slot in SIM_SLOTS)
    if sdk >= 23:
        return tuple(
            ImeiQuery(slot, f"service call iphonesubinfo 3 i32 {slot} s16 {SHELL_PACKAGE}",
                      "IPhoneSubInfo.getDeviceIdForPhone (transaction 3, Android 6-10)")
            for slot in SIM_SLOTS)
    return (ImeiQuery(None, "service call iphonesubinfo 1",
                      "IPhoneSubInfo.getDeviceId (transaction 1, Android 5)"),)


class Answer(StrEnum):
    VALUE = "value"  # a string came back
    NULL = "null"  # the service answered null (no modem, not provisioned ...)
    REFUSED = "refused"  # an exception (SecurityException ...)
    NO_SERVICE = "no_service"  # `service` found no iphonesubinfo (Wi-Fi-only device)
    UNREADABLE = "unreadable"  # an answer this module does not understand


@dataclass(frozen=True)
class Reply:
    """What one `service call` said, decoded and bounded."""

    answer: Answer
    value: str | None = None
    detail: str = ""


_LINE_OFFSET = re.compile(r"^0x[0-9a-f]{8}: ")
_HEX_WORD = re.compile(r"^(?:[0-9a-f]{2}){1,4}$")


def parcel_bytes(output: bytes) -> bytes | Reply:
    """The data bytes of `Result: Parcel(...)`, or the Reply that explains why there are
    none (no such service, an error parcel, no data). BadDeviceData when the dump does
    not have the shape printHexData gives it."""
    text = decode_text(output, "service call", MAX_DUMP_BYTES).strip()
    if "does not exist" in text and text.startswith("service: Service "):
        return Reply(Answer.NO_SERVICE, detail=text[:120])
    if not text.startswith("Result: Parcel("):
        raise BadDeviceData(f"service call: unexpected answer {text[:60]!r}")
    body = text[len("Result: Parcel("):]
    if not body.endswith(")"):
        raise BadDeviceData("service call: unterminated Parcel dump")
    body = body[:-1]
    if body.startswith("Error:") or body.strip() == "NULL":
        return Reply(Answer.UNREADABLE, detail=body[:120])
    data = bytearray()
    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _LINE_OFFSET.match(line):
            line = line[len("0x00000000: "):]
        hex_part, quote, _ascii = line.partition("'")
        if not quote:
            raise BadDeviceData("service call: a dump line without its text column")
        for word in hex_part.split():
            if not _HEX_WORD.fullmatch(word):
                raise BadDeviceData(f"service call: {word[:12]!r} is not a hex word")
            # printHexData prints each 4-byte group most significant byte first.
            data += bytes.fromhex(word)[::-1]
            if len(data) > MAX_PARCEL_BYTES:
                raise BadDeviceData(f"service call: more than {MAX_PARCEL_BYTES} bytes")
    if not data:
        return Reply(Answer.UNREADABLE, detail="an empty reply")
    return bytes(data)


def _int32(data: bytes, pos: int) -> int:
    if pos < 0 or pos + 4 > len(data):
        raise BadDeviceData("service call: the reply ends inside a number")
    value: int = struct.unpack_from("<i", data, pos)[0]
    return value


def _string16(data: bytes, pos: int, max_chars: int = MAX_ID_CHARS) -> str | None:
    length = _int32(data, pos)
    if length == -1:
        return None
    if not 0 <= length <= max_chars:
        raise BadDeviceData(f"service call: a string of {length} characters")
    end = pos + 4 + 2 * length
    if end + 2 > len(data):
        raise BadDeviceData("service call: the reply ends inside a string")
    try:
        text = data[pos + 4:end].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise BadDeviceData("service call: a string that is not UTF-16") from exc
    if data[end:end + 2] != b"\x00\x00" or not text.isprintable():
        raise BadDeviceData("service call: a malformed string")
    return text


def read_reply(output: bytes) -> Reply:
    """Decode a `service call iphonesubinfo` answer whose result is one String16."""
    data = parcel_bytes(output)
    if isinstance(data, Reply):
        return data
    code = _int32(data, 0)
    pos = 4
    if code == EX_HAS_STRICTMODE_REPLY_HEADER:
        # A "fat" reply header (StrictMode violations): its size counts from the code.
        size = _int32(data, 4)
        if size < 8 or size > len(data):
            raise BadDeviceData("service call: a reply header of impossible size")
        pos = size
        code = 0
    elif code == EX_HAS_NOTED_APPOPS_REPLY_HEADER:
        return Reply(Answer.UNREADABLE, detail="a reply with noted app-ops (not decoded)")
    if code != 0:
        name = _EXCEPTION_NAMES.get(code, f"exception code {code}")
        try:
            message = _string16(data, pos, max_chars=400) or ""
        except BadDeviceData:
            message = ""
        return Reply(Answer.REFUSED, detail=f"{name}: {message}"[:200])
    value = _string16(data, pos)
    if value is None:
        return Reply(Answer.NULL)
    return Reply(Answer.VALUE, value=value)


_DUMPSYS_ID = re.compile(r"^\s*Device ID = (\S{0,64})\s*$")


def read_dumpsys(output: bytes) -> Reply:
    """`dumpsys iphonesubinfo` before Android 6 (PhoneSubInfo.dump): "Device ID = ..."."""
    text = decode_text(output, DUMPSYS_IPHONESUBINFO, MAX_DUMP_BYTES)
    for line in text.splitlines():
        match = _DUMPSYS_ID.match(line)
        if match:
            value = match.group(1)
            return Reply(Answer.VALUE, value=value) if value else Reply(Answer.NULL)
    if "Permission Denial" in text:
        return Reply(Answer.REFUSED, detail=text.strip()[:200])
    return Reply(Answer.UNREADABLE, detail="no 'Device ID' line")


@dataclass
class PhoneIds:
    """What the phone said about its identifiers, validated; `method` and `notes` go into
    the evidence of the identity check."""

    imeis: list[str] = field(default_factory=list)
    meid: str | None = None
    method: str = ""
    answers: list[str] = field(default_factory=list)  # one word per question asked
    rejected: int = 0  # values that were neither a valid IMEI nor a valid MEID
    notes: list[str] = field(default_factory=list)

    def add(self, reply: Reply, what: str) -> None:
        """Fold one answer in (duplicates from slot fallback are dropped)."""
        self.answers.append(reply.answer.value)
        if reply.answer is not Answer.VALUE or reply.value is None:
            if reply.detail:
                self.notes.append(f"{what}: {reply.answer.value} ({reply.detail})")
            return
        value = reply.value.strip()
        if valid_imei(value):
            if value not in self.imeis:
                self.imeis.append(value)
        elif valid_meid(value.upper()):
            self.meid = self.meid or value.upper()
        elif value:
            # Never recorded: a value that fails its check digit is a misread, a blank
            # NV item or a phone that lies; the technician enters the real one.
            self.rejected += 1
            self.notes.append(f"{what}: a value that is not a valid IMEI or MEID")

    @property
    def refused(self) -> bool:
        return any(a == Answer.REFUSED.value for a in self.answers)
