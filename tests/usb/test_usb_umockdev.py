"""Detection against emulated USB devices: the real libudev (pyudev) and libusb see them."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from conftest import BenchRunner

PHONES = {
    # profile: (expected kind, serial given)
    "pixel_adb": ("android_adb", "PIXADB01"),
    "pixel_mtp": ("android_no_adb", "PIXMTP01"),
    "pixel_auth_prompt": ("android_adb", "PIXPROMPT1"),
    "pixel_fastboot": ("android_fastboot", "PIXFB01"),
    "samsung_mtp_legacy": ("android_no_adb", "R58M12345"),
    "iphone": ("ios", "00008030001A35E22EF8802E"),
    "iphone_recovery": ("apple_recovery", None),
    "iphone_dfu": ("apple_dfu", None),
}
IGNORED = ["keyboard", "hub", "camera", "apple_keyboard"]


def by_port(phones: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["port_path"]: p for p in phones}


def test_coldplug_classifies_phones_and_ignores_the_rest(run_bench: BenchRunner) -> None:
    steps: list[dict[str, Any]] = []
    for n, (profile, (_, serial)) in enumerate(PHONES.items(), start=1):
        steps.append({"op": "plug", "port": f"1-{n}", "profile": profile, "serial": serial})
    for n, profile in enumerate(IGNORED, start=1):
        steps.append({"op": "plug", "port": f"2-{n}", "profile": profile})
    steps += [{"op": "snapshot"}, {"op": "start"}, {"op": "settle"}]
    out = run_bench(steps, slots={"1-1": "A1", "1-2": "A2"})
    snap = by_port(out["results"][len(PHONES) + len(IGNORED)])
    assert sorted(snap) == [f"1-{n}" for n in range(1, len(PHONES) + 1)]  # nothing on bus 2
    for n, (profile, (kind, serial)) in enumerate(PHONES.items(), start=1):
        phone = snap[f"1-{n}"]
        assert phone["kind"] == kind, profile
        if serial:
            assert phone["serial"] == serial, profile
    assert snap["1-1"]["slot"] == "A1" and snap["1-2"]["slot"] == "A2"
    assert snap["1-3"]["slot"] == "usb-1-3"  # unmapped: derived from the port path
    assert snap["1-1"]["vendor_name"] == "Google"
    assert snap["1-1"]["product_name"] == "Pixel / Nexus (ADB)"
    assert snap["1-1"]["vid_pid"] == "18d1:4ee7"
    assert snap["1-1"]["devnode"] == f"/dev/bus/usb/001/{snap['1-1']['devnum']:03d}"
    assert "USB debugging" in snap["1-2"]["hint"]
    # Recovery / DFU: the iBoot serial string is not a serial; the ECID is extracted.
    assert snap["1-7"]["serial"] is None and snap["1-7"]["ecid"] == "001A35E22EF8802E"
    assert snap["1-8"]["ecid"] == "001A35E22EF8802E"
    # events() reports the same phones as coldplug adds, once each, and nothing else.
    events = out["events"]
    assert all(e["action"] == "add" and e["coldplug"] for e in events)
    assert sorted(e["phone"]["port_path"] for e in events) == sorted(snap)


def test_auth_prompt_is_not_visible_on_usb(run_bench: BenchRunner) -> None:
    """A phone asking "Allow USB debugging?" has the same descriptors as one that trusts us."""
    out = run_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_mtp_adb", "serial": "AUTHD"},
            {"op": "plug", "port": "1-2", "profile": "pixel_auth_prompt", "serial": "PROMPT"},
            {"op": "snapshot"},
        ]
    )
    a, b = out["results"][2]
    assert a["kind"] == b["kind"] == "android_adb"
    assert a["interfaces"] == b["interfaces"]
    assert "Allow USB debugging" in b["hint"]


def test_hotplug_add_and_remove_each_kind(run_bench: BenchRunner) -> None:
    steps: list[dict[str, Any]] = [{"op": "start"}]
    for profile, (_, serial) in PHONES.items():
        steps += [
            {"op": "plug", "port": "1-5", "profile": profile, "serial": serial},
            {"op": "settle"},
            {"op": "unplug", "port": "1-5"},
            {"op": "settle"},
        ]
    for profile in IGNORED:
        steps += [
            {"op": "plug", "port": "1-6", "profile": profile},
            {"op": "settle"},
            {"op": "unplug", "port": "1-6"},
            {"op": "settle"},
        ]
    out = run_bench(steps, fold_window=1.0)
    seen = [(e["action"], e["phone"]["kind"], e["phone"]["port_path"]) for e in out["events"]]
    expected = []
    for kind, _ in PHONES.values():
        expected += [("add", kind, "1-5"), ("remove", kind, "1-5")]
    assert seen == expected
    assert not any(e["coldplug"] for e in out["events"])


def test_duplicate_adds_are_folded(run_bench: BenchRunner) -> None:
    out = run_bench(
        [
            {"op": "start"},
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "DUP1"},
            {"op": "uevent", "port": "1-1", "action": "add"},
            {"op": "uevent", "port": "1-1", "action": "add"},
            {"op": "uevent", "port": "1-1", "action": "change"},
            {"op": "settle"},
            # later duplicates of a phone already reported: still nothing new
            {"op": "uevent", "port": "1-1", "action": "add"},
            {"op": "uevent", "port": "1-1", "action": "bind"},
            {"op": "settle"},
        ],
        fold_window=1.0,
    )
    assert [e["action"] for e in out["events"]] == ["add"]


def test_reset_blip_is_a_change_and_keeps_the_slot(run_bench: BenchRunner) -> None:
    """Re-enumeration (new devnum) or a mode switch within the window: one `change`."""
    out = run_bench(
        [
            {"op": "start"},
            {"op": "plug", "port": "1-2.3", "profile": "pixel_adb", "serial": "RST1"},
            {"op": "settle"},
            {"op": "unplug", "port": "1-2.3"},
            {"op": "plug", "port": "1-2.3", "profile": "pixel_adb", "serial": "RST1"},
            {"op": "settle"},
            {"op": "unplug", "port": "1-2.3"},
            {"op": "plug", "port": "1-2.3", "profile": "pixel_fastboot", "serial": "RST1"},
            {"op": "settle"},
        ],
        slots={"1-2.3": "B3"},
        fold_window=10.0,
        max_fold=30.0,
    )
    ev = out["events"]
    assert [e["action"] for e in ev] == ["add", "change", "change"]
    assert {e["phone"]["slot"] for e in ev} == {"B3"}
    assert ev[1]["previous"]["devnum"] != ev[1]["phone"]["devnum"]
    assert ev[2]["phone"]["kind"] == "android_fastboot"
    assert ev[2]["previous"]["kind"] == "android_adb"


def test_swap_on_one_port_within_window_is_remove_then_add(run_bench: BenchRunner) -> None:
    """A different phone on the same port is never reported as a change of the first."""
    out = run_bench(
        [
            {"op": "start"},
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "FIRST"},
            {"op": "settle"},
            {"op": "unplug", "port": "1-1"},
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "SECOND"},
            {"op": "settle"},
        ],
        fold_window=2.0,
    )
    got = [(e["action"], e["phone"]["serial"]) for e in out["events"]]
    assert got == [("add", "FIRST"), ("remove", "FIRST"), ("add", "SECOND")]


def test_unplug_replug_blip_before_first_report_is_one_add(run_bench: BenchRunner) -> None:
    out = run_bench(
        [
            {"op": "start"},
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "FLAP"},
            {"op": "unplug", "port": "1-1"},
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "FLAP"},
            {"op": "unplug", "port": "1-1"},
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "FLAP"},
            {"op": "settle"},
        ],
        fold_window=10.0,
        max_fold=30.0,
    )
    assert [e["action"] for e in out["events"]] == ["add"]


def test_phone_moved_to_another_port_is_recognised(run_bench: BenchRunner) -> None:
    out = run_bench(
        [
            {"op": "plug", "port": "1-2", "profile": "pixel_adb", "serial": "MOVER"},
            {"op": "start"},
            {"op": "unplug", "port": "1-2"},
            {"op": "settle"},
            {"op": "plug", "port": "1-3", "profile": "pixel_adb", "serial": "MOVER"},
            {"op": "settle"},
        ],
        slots={"1-2": "A2", "1-3": "A3"},
        fold_window=1.0,
    )
    ev = out["events"]
    assert [(e["action"], e["phone"]["slot"]) for e in ev] == [
        ("add", "A2"),
        ("remove", "A2"),
        ("add", "A3"),
    ]
    assert ev[0]["coldplug"] and not ev[0]["replug"]
    assert ev[2]["replug"] and ev[2]["previous_slot"] == "A2"
    assert ev[2]["previous_port_path"] == "1-2"


def test_burst_of_64_phones_each_seen_once_in_its_slot(run_bench: BenchRunner) -> None:
    ports = [f"1-{a}.{b}.{c}" for a in range(1, 5) for b in range(1, 5) for c in range(1, 5)]
    assert len(ports) == 64
    slots = {port: f"S{n:02d}" for n, port in enumerate(ports, start=1)}
    steps: list[dict[str, Any]] = [{"op": "start"}]
    steps += [
        {"op": "plug", "port": port, "profile": "pixel_adb", "serial": f"BURST{n:02d}"}
        for n, port in enumerate(ports, start=1)
    ]
    steps += [{"op": "settle"}]
    steps += [{"op": "unplug", "port": f"1-{a}"} for a in range(1, 5)]  # pull the hubs
    steps += [{"op": "settle"}]
    out = run_bench(steps, slots=slots, fold_window=1.0)
    adds = [e for e in out["events"] if e["action"] == "add"]
    removes = [e for e in out["events"] if e["action"] == "remove"]
    assert len(adds) == 64 and len(removes) == 64
    assert {e["phone"]["serial"] for e in adds} == {f"BURST{n:02d}" for n in range(1, 65)}
    for e in adds:
        n = int(e["phone"]["serial"][5:])
        assert e["phone"]["port_path"] == ports[n - 1]
        assert e["phone"]["slot"] == f"S{n:02d}"
    assert out["events"].index(removes[0]) >= 64  # every add came before the first remove


def test_descriptors_udev_lacks_come_from_libusb(run_bench: BenchRunner) -> None:
    """Without usbmuxd an iPhone's active configuration has no usbmux interface, and an
    unconfigured device has no interfaces in sysfs at all: libusb reads the descriptors."""
    steps = [
        {"op": "plug", "port": "1-1", "profile": "iphone_no_usbmuxd"},
        {"op": "plug", "port": "1-2", "profile": "pixel_adb", "overrides": {"active": None}},
        {"op": "snapshot"},
    ]
    with_libusb = by_port(run_bench(steps)["results"][2])
    without = by_port(run_bench(steps, use_libusb=False)["results"][2])
    assert with_libusb["1-1"]["kind"] == "ios"
    assert without["1-1"]["kind"] == "ios_no_usbmux"
    mux = [i for i in with_libusb["1-1"]["interfaces"] if (i["cls"], i["subclass"]) == (255, 254)]
    assert mux and not mux[0]["active"] and mux[0]["configuration"] in (3, 4)
    assert with_libusb["1-2"]["kind"] == "android_adb"
    assert "1-2" not in without  # no interfaces known: not classified as a phone


def test_usb_list_json_under_umockdev(run_bench: BenchRunner) -> None:
    out = run_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "LIST1"},
            {"op": "plug", "port": "1-2", "profile": "iphone"},
            {"op": "plug", "port": "1-3", "profile": "keyboard"},
            {"op": "cli", "argv": ["usb", "list", "--json", "--slot", "1-1=Left"]},
            {"op": "cli", "argv": ["usb", "list"]},
        ]
    )
    listed = out["results"][3]
    assert listed["rc"] == 0
    doc = json.loads(listed["stdout"])
    phones = by_port(doc["phones"])
    assert sorted(phones) == ["1-1", "1-2"]
    assert phones["1-1"]["slot"] == "Left" and phones["1-1"]["kind"] == "android_adb"
    assert phones["1-2"]["platform"] == "ios"
    text = out["results"][4]["stdout"]
    assert "LIST1" in text and "00008030001A35E22EF8802E" in text


def test_adb_interface_claimed_by_another_program(run_bench: BenchRunner) -> None:
    with socket.socket() as listener:  # stands in for an adb server on an ephemeral port
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        out = run_bench(
            [
                {"op": "plug", "port": "1-1", "profile": "pixel_mtp_adb", "serial": "HELD"},
                {"op": "adb_check", "port": "1-1", "adb_port": port},
                {"op": "claim", "port": "1-1", "interface": 1},
                {"op": "adb_check", "port": "1-1", "adb_port": port},
            ]
        )
    free, held = out["results"][1], out["results"][3]
    assert free["has_adb_interface"] and free["claimed_by_userspace"] is False
    assert free["adb_server_listening"] is True
    assert held["claimed_by_userspace"] is True and held["conflict"] is True
    assert "adb kill-server" in held["message"]


def test_flapping_port_is_reported_after_max_fold(run_bench: BenchRunner) -> None:
    """A port that never goes quiet is still reported, after max_fold, not never."""
    steps: list[dict[str, Any]] = [
        {"op": "start"},
        {"op": "mark"},
        {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "FLAPPY"},
    ]
    for _ in range(16):  # 16 x 0.5 s of uevents, each well within the window of the last
        steps += [
            {"op": "uevent", "port": "1-1", "action": "change"},
            {"op": "sleep", "seconds": 0.5},
        ]
    steps += [{"op": "mark"}, {"op": "settle"}]
    # Slow clock: uevent gaps (0.5 bench s = 0.1 s real) stay well inside the 2 s window
    # even on a loaded machine.
    out = run_bench(steps, speed=5.0, fold_window=2.0, max_fold=4.0)
    start, end = out["results"][1], out["results"][-2]
    assert end - start >= 8.0
    (add,) = out["events"]
    assert add["action"] == "add"
    assert start + 4.0 <= add["at"] < end - 1.0  # reported while the port still flapped


def test_usb_transport_finds_a_phone_by_serial_only_when_unambiguous(
    run_bench: BenchRunner,
) -> None:
    """AdbUsbEndpoint looks the serial up at each connect: after a re-enumeration it finds
    the new device number; with two phones of one serial it refuses to pick one."""
    out = run_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "FINDME"},
            {"op": "locate", "serial": "FINDME"},
            {"op": "unplug", "port": "1-1"},
            {"op": "plug", "port": "1-4.2", "profile": "pixel_adb", "serial": "FINDME"},
            {"op": "locate", "serial": "FINDME"},
            {"op": "locate", "serial": "ABSENT"},
            {"op": "plug", "port": "1-3", "profile": "pixel_adb", "serial": "FINDME"},
            {"op": "locate", "serial": "FINDME"},
        ]
    )
    first, moved, absent, twice = (out["results"][i] for i in (1, 4, 5, 7))
    assert first["port_path"] == "1-1" and first["devnode"].startswith("/dev/bus/usb/001/")
    assert moved["port_path"] == "1-4.2" and moved["devnode"] != first["devnode"]
    assert absent["error"] == "DeviceGone"
    assert twice["error"] == "DeviceError" and "one at a time" in twice["hint"]


def test_adb_over_usb_fails_clearly_and_never_hangs(run_bench: BenchRunner, tmp_path: Path) -> None:
    """connect_adb(AdbUsbEndpoint) goes to the phone by serial through libusb. umockdev has
    no usbfs behind its device nodes, so the open fails: as a DeviceError the session can
    report, within the connect timeout; an absent or doubled serial never reaches libusb."""
    key = str(tmp_path / "adbkey")
    out = run_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "EMUL01"},
            {"op": "usb_connect", "serial": "EMUL01", "key": key},
            {"op": "usb_connect", "serial": "GONE01", "key": key},
            {"op": "plug", "port": "1-2", "profile": "pixel_adb", "serial": "EMUL01"},
            {"op": "usb_connect", "serial": "EMUL01", "key": key},
        ]
    )
    emulated, gone, doubled = (out["results"][i] for i in (1, 2, 4))
    assert emulated["error"] in ("DeviceGone", "DeviceError")
    assert "unexpected" not in emulated["message"]
    assert gone == {**gone, "error": "DeviceGone", "message": "no phone with serial GONE01 on USB"}
    assert doubled["error"] == "DeviceError" and "one at a time" in doubled["hint"]
