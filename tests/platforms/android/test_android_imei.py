"""IMEI / MEID over ADB: Parcel dumps as Android prints them, per Android version, on
simulated phones (dual SIM, single SIM, CDMA, one that refuses), and phones that lie."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from android_sim import Sim

from wipeagent.errors import BadDeviceData
from wipeagent.identifiers import luhn_ok, valid_imei, valid_meid
from wipeagent.models import CheckStatus, IdentifierSource
from wipeagent.platforms.android import imei
from wipeagent.platforms.android.checks import PHONE_IDS
from wipeagent_sim.android import binder
from wipeagent_sim.android.profiles import PROFILE_DIR

SimFactory = Callable[[str | Path], AbstractAsyncContextManager[Sim]]

# What a Pixel answers to `service call iphonesubinfo 4 i32 0 s16 com.android.shell`
# (libbinder's Parcel::print; the IMEI is a made-up one with a valid check digit).
REAL_DUMP = (
    b"Result: Parcel(\n"
    b"  0x00000000: 00000000 0000000f 00350033 00390035 '........3.5.5.9.'\n"
    b"  0x00000010: 00370038 00310033 00320034 00350035 '8.7.3.1.4.2.5.5.'\n"
    b"  0x00000020: 00360031 00000036                   '1.6.6...        ')\n"
)


def dump(data: bytes) -> bytes:
    return f"Result: Parcel({binder.hex_dump(data)})\n".encode()


# -- identifiers ---------------------------------------------------------------------------


def test_luhn_and_identifier_shapes() -> None:
    assert valid_imei("355987314255166")
    assert not valid_imei("355987314255167")  # check digit wrong
    assert not valid_imei("000000000000000")  # a blank NV item passes Luhn, not us
    assert not valid_imei("35598731425516")  # 14 digits
    assert not valid_imei("３５５９８７３１４２５５１６６")  # full-width digits
    assert not luhn_ok("12a4")
    assert valid_meid("A10000009296F2") and not valid_meid("a10000009296f2")
    assert not valid_meid("00000000000000")


# -- the Parcel dump -------------------------------------------------------------------------


def test_simulator_prints_the_dump_libbinder_prints() -> None:
    assert dump(binder.reply_string("355987314255166")) == REAL_DUMP
    assert dump(binder.reply_string(None)) == b"Result: Parcel(00000000 ffffffff '........')\n"
    assert binder.hex_dump(b"") == "NULL"


def test_reads_an_imei_from_a_real_dump() -> None:
    reply = imei.read_reply(REAL_DUMP)
    assert reply.answer is imei.Answer.VALUE and reply.value == "355987314255166"


@pytest.mark.parametrize("data, answer", [
    (binder.reply_string(None), imei.Answer.NULL),
    (binder.reply_exception(-1, binder.DENIED), imei.Answer.REFUSED),
    (b"", imei.Answer.UNREADABLE),
])
def test_null_refusal_and_empty_replies(data: bytes, answer: imei.Answer) -> None:
    reply = imei.read_reply(dump(data))
    assert reply.answer is answer
    if answer is imei.Answer.REFUSED:
        assert reply.detail.startswith("SecurityException: getDeviceId: The user 2000")


def test_no_such_service_and_error_parcels() -> None:
    no = imei.read_reply(b"service: Service iphonesubinfo does not exist\n")
    assert no.answer is imei.Answer.NO_SERVICE
    error = imei.read_reply(b'Result: Parcel(Error: 0xffffffb6 "Not a data message")\n')
    assert error.answer is imei.Answer.UNREADABLE


def test_strict_mode_reply_header_is_skipped() -> None:
    # EX_HAS_STRICTMODE_REPLY_HEADER, header size 12 (counted from the code), one word of
    # header payload, then the String16.
    data = struct.pack("<iii", -128, 12, 7) + binder.string16("351349110248735")
    reply = imei.read_reply(dump(data))
    assert reply.value == "351349110248735"


@pytest.mark.parametrize("output", [
    b"Result: Parcel(00000000 7fffffff '........')\n",  # a string of 2 billion characters
    b"Result: Parcel(00000000 00000040 '....@...')\n",  # longer than the reply
    b"Result: Parcel(00000000 0000000f 00350033\n",  # no closing parenthesis
    b"Result: Parcel(\n  0x00000000: 0000000g '....')\n",  # not hex
    b"Result: Parcel(\n  0x00000000: 000000000 '....')\n",  # a 9-digit word
    b"Result: Parcel(\n  0x00000000: 00000000 00000000\n)",  # no text column
    b"Result: Parcel(00000000 00000001 dc000035 '........')\n",  # unpaired surrogate
    b"Result: Parcel(00000000 00000001 00070035 '........')\n",  # not NUL-terminated
    b"Result: Parcel(00000000 00000001 00000007 '........')\n",  # a control character
    b"Result: Parcel(00000000 '....')\n",  # ends inside the length
    b"I am a phone and I say: 355987314255166\n",
    b"Result: Parcel(\xff\xfe)\n",  # not UTF-8
])
def test_malformed_dumps_are_bad_device_data(output: bytes) -> None:
    with pytest.raises(BadDeviceData):
        imei.read_reply(output)


def test_oversized_dumps_are_refused_by_size() -> None:
    huge = b"Result: Parcel(\n" + b"  0x00000000: 00000000 00000000 00000000 00000000 '.'\n" * 400
    with pytest.raises(BadDeviceData):
        imei.read_reply(huge)


def test_a_lying_phone_cannot_break_the_parser() -> None:
    """Mutated dumps (flipped, cut, repeated bytes): the parser answers or raises
    BadDeviceData, nothing else, and never yields a value that is not a plain string."""
    rng = random.Random(12)
    seeds = [REAL_DUMP, dump(binder.reply_exception(-1, binder.DENIED)),
             dump(binder.reply_string(None)), dump(struct.pack("<iii", -128, 12, 0)
                                                   + binder.string16("A10000009296F2"))]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data))
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                del data[pos:pos + rng.randint(1, 20)]
            elif op == 2:
                data[pos:pos] = bytes(rng.choice(b"0123456789abcdef '\n") for _ in range(4))
            else:
                data[pos:pos] = data[: rng.randint(0, 40)]
        try:
            reply = imei.read_reply(bytes(data))
        except BadDeviceData:
            continue
        assert isinstance(reply, imei.Reply)
        assert reply.value is None or (reply.value.isprintable() and len(reply.value) <= 64)


def test_dumpsys_before_android_6() -> None:
    out = b"Phone Subscriber Info:\n  Phone Type = GSM\n  Device ID = 357925106614206\n"
    assert imei.read_dumpsys(out).value == "357925106614206"
    assert imei.read_dumpsys(b"Permission Denial: can't dump iphonesubinfo\n").answer \
        is imei.Answer.REFUSED
    assert imei.read_dumpsys(b"").answer is imei.Answer.UNREADABLE


def test_transaction_codes_per_android_version() -> None:
    assert [q.command for q in imei.imei_queries(34)] == [
        "service call iphonesubinfo 4 i32 0 s16 com.android.shell",
        "service call iphonesubinfo 4 i32 1 s16 com.android.shell"]
    assert imei.imei_queries(30)[0].command.startswith("service call iphonesubinfo 4 ")
    assert imei.imei_queries(29)[1].command == \
        "service call iphonesubinfo 3 i32 1 s16 com.android.shell"
    assert imei.imei_queries(23)[0].command.startswith("service call iphonesubinfo 3 ")
    assert [q.command for q in imei.imei_queries(22)] == ["service call iphonesubinfo 1"]


def test_invalid_values_stay_out_of_the_identity() -> None:
    ids = imei.PhoneIds()
    ids.add(imei.Reply(imei.Answer.VALUE, "355987314255167"), "slot 0")  # bad check digit
    ids.add(imei.Reply(imei.Answer.VALUE, "$(reboot)"), "slot 1")
    assert ids.imeis == [] and ids.rejected == 2


# -- the simulated phones, over real ADB ---------------------------------------------------


async def test_dual_sim_android_14_reads_both_imeis(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        ident = await sim.driver.identify()
        assert ident.imeis == ("355987314255166", "355987314255174")
        assert ident.imei_source is IdentifierSource.PHONE
        assert ident.hardware_ids["imei"] == "355987314255166"
        check = {c.id: c for c in await sim.driver.diagnose(ident)}[PHONE_IDS]
        assert check.status is CheckStatus.PASS
        assert "service call iphonesubinfo 4 i32 1 s16 com.android.shell" in check.method
        assert ident.model_number == "Pixel 8"


async def test_android_9_uses_transaction_3(sim_factory: SimFactory) -> None:
    async with sim_factory("android9") as sim:
        ident = await sim.driver.identify()
        # Single SIM: asked for slot 1 it answers slot 0 again, counted once.
        assert ident.imeis == ("357925106614206",)
        check = {c.id: c for c in await sim.driver.diagnose(ident)}[PHONE_IDS]
        assert "iphonesubinfo 3 i32 0" in check.method


async def test_a_phone_that_refuses_has_no_imei(sim_factory: SimFactory) -> None:
    async with sim_factory("unencrypted") as sim:
        ident = await sim.driver.identify()
        assert ident.imeis == () and ident.imei_source is None
        check = {c.id: c for c in await sim.driver.diagnose(ident)}[PHONE_IDS]
        assert check.status is CheckStatus.INFO
        assert "refused" in check.detail and "SecurityException" in check.detail
        assert check.evidence["answers"] == "refused,refused"


def _variant(tmp_path: Path, base: str, telephony: str, sdk: int | None = None) -> Path:
    text = (PROFILE_DIR / f"{base}.toml").read_text()
    text = text.split("\n[telephony]")[0].rstrip("\n#").rstrip() + "\n\n" + telephony
    if sdk is not None:
        text = text.replace("sdk = 34", f"sdk = {sdk}")
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


async def test_cdma_phone_reports_a_meid(sim_factory: SimFactory, tmp_path: Path) -> None:
    path = _variant(tmp_path, "pixel8-clean",
                    '[telephony]\ndevice_ids = ["A10000009296F2", "355987314255166"]\n')
    async with sim_factory(path) as sim:
        ident = await sim.driver.identify()
        assert ident.meid == "A10000009296F2"
        assert ident.imeis == ("355987314255166",)


async def test_device_without_modem(sim_factory: SimFactory, tmp_path: Path) -> None:
    path = _variant(tmp_path, "pixel8-clean", '[telephony]\nanswer = "no_service"\n')
    async with sim_factory(path) as sim:
        ident = await sim.driver.identify()
        check = {c.id: c for c in await sim.driver.diagnose(ident)}[PHONE_IDS]
        assert ident.imeis == () and check.evidence["answers"] == "no_service"


async def test_android_5_asks_the_default_phone(sim_factory: SimFactory,
                                                tmp_path: Path) -> None:
    path = _variant(tmp_path, "pixel8-clean",
                    '[telephony]\ndevice_ids = ["357925106614206"]\n', sdk=22)
    async with sim_factory(path) as sim:
        ident = await sim.driver.identify()
        assert ident.imeis == ("357925106614206",)


async def test_lying_imei_is_not_recorded(sim_factory: SimFactory, tmp_path: Path) -> None:
    path = _variant(tmp_path, "pixel8-clean",
                    '[telephony]\ndevice_ids = ["355987314255167", "123"]\n')
    async with sim_factory(path) as sim:
        ident = await sim.driver.identify()
        check = {c.id: c for c in await sim.driver.diagnose(ident)}[PHONE_IDS]
        assert ident.imeis == () and check.status is CheckStatus.WARN
        assert check.evidence["rejected_values"] == 2


async def test_wrong_calling_package_is_refused_like_android(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        out, _, status = binder.service_call(
            sim.phone, ["iphonesubinfo", "4", "i32", "0", "s16", "com.example.app"])
        reply = imei.read_reply(out.encode())
        assert status == 0 and reply.answer is imei.Answer.REFUSED
        assert "does not belong to 2000" in reply.detail
