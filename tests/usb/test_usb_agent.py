"""The agent over an emulated USB bench: USB events start, pause, resume and end sessions.

The USB side is real (umockdev devices and uevents, libudev, UsbWatcher, UsbSource, the
Agent, sessions, journal and certificates); each emulated phone's USB serial is mapped to
a simulated Android phone with the same serial that speaks real ADB over TCP
(tests/usb/agent_child.py), because umockdev cannot carry ADB's bulk transfers.
"""

from __future__ import annotations

from typing import Any

from conftest import BenchRunner


def steps_of(out: dict[str, Any], step: str, slot: str | None = None) -> list[dict[str, Any]]:
    return [e for e in out["events"] if e["step"] == step and slot in (None, e["slot"])]


def test_plugged_phone_runs_to_its_outcome_in_its_slot(run_agent_bench: BenchRunner) -> None:
    out = run_agent_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "USBPIX01"},
            {"op": "completed", "count": 1},
        ],
        sims=["USBPIX01"],
        slots={"1-1": "A1"},
    )
    (result,) = out["results"]
    assert result == {**result, "slot": "A1", "serial": "USBPIX01", "outcome": "erased",
                      "certificate": True}
    assert [s["state"] for s in out["sessions"]] == ["done"]
    assert out["certificates"] == 1
    assert out["power_cycles"] == {"USBPIX01": 1}
    assert not steps_of(out, "paused")


def test_reboot_after_the_erase_is_not_a_departure(run_agent_bench: BenchRunner) -> None:
    """The erase reboots the phone: it leaves USB and comes back; the session waits."""
    out = run_agent_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_adb", "serial": "REBOOT01"},
            {"op": "wait", "slot": "A1", "step": "await_return"},
            {"op": "usb_unplug", "port": "1-1"},
            {"op": "sleep", "seconds": 3},
            {"op": "usb_plug", "port": "1-1", "profile": "pixel_adb", "serial": "REBOOT01"},
            {"op": "completed", "count": 1},
        ],
        sims=["REBOOT01"],
        slots={"1-1": "A1"},
    )
    (result,) = out["results"]
    assert result["outcome"] == "erased"
    assert not steps_of(out, "paused")
    assert len(out["sessions"]) == 1 and out["certificates"] == 1


def test_unplug_before_erase_pauses_and_replug_resumes(run_agent_bench: BenchRunner) -> None:
    out = run_agent_bench(
        [
            {"op": "plug", "port": "1-2", "profile": "pixel_adb", "serial": "RESUME01"},
            {"op": "wait", "slot": "B2", "step": "confirm"},  # held here: before the erase
            {"op": "unplug", "port": "1-2"},
            {"op": "wait", "slot": "B2", "step": "paused"},
            {"op": "sleep", "seconds": 3},  # nothing runs while the phone is away
            {"op": "plug", "port": "1-2", "profile": "pixel_adb", "serial": "RESUME01"},
            {"op": "completed", "count": 2},  # the paused task and the resumed session
        ],
        sims=["RESUME01"],
        slots={"1-2": "B2"},
        gate="hold_first",
    )
    first = steps_of(out, "confirm")[0]["session"]
    # While unplugged: paused, the journal entry still open (nothing after the pause).
    paused_at = out["events"].index(steps_of(out, "paused")[0])
    assert [e["step"] for e in out["events"][paused_at + 1:]][:2] == ["connect", "identify"]
    # Re-plugged: the new session adopted the paused one and finished it.
    (resume,) = steps_of(out, "resume")
    assert first in resume["message"]
    (result,) = out["results"]
    assert result["session"] == first and result["outcome"] == "erased"
    assert result["slot"] == "B2" and result["certificate"]
    states = {s["id"]: (s["state"], s["outcome"]) for s in out["sessions"]}
    assert states.pop(first) == ("done", "erased")
    assert list(states.values()) == [("done", "superseded")]
    assert out["certificates"] == 1  # exactly one certificate for the phone
    assert out["power_cycles"] == {"RESUME01": 1}  # erased once


def test_phones_that_cannot_be_processed_are_notices(run_agent_bench: BenchRunner) -> None:
    out = run_agent_bench(
        [
            {"op": "plug", "port": "1-1", "profile": "pixel_mtp", "serial": "MTPONLY1"},
            {"op": "plug", "port": "1-2", "profile": "pixel_fastboot", "serial": "FBOOT01"},
            {"op": "plug", "port": "1-3", "profile": "iphone_recovery"},
            {"op": "plug", "port": "1-4", "profile": "iphone"},
            {"op": "wait", "step": "notice", "count": 4},
            {"op": "sleep", "seconds": 2},
        ],
        sims=["MTPONLY1"],
        slots={"1-1": "A1", "1-2": "A2", "1-3": "A3", "1-4": "A4"},
        usbmuxd="/nonexistent/usbmuxd",
    )
    notices = {e["slot"]: e["message"] for e in steps_of(out, "notice")}
    assert "USB debugging" in notices["A1"]
    assert "fastboot" in notices["A2"]
    assert "recovery" in notices["A3"]
    assert "usbmuxd is not running" in notices["A4"]
    assert "systemctl start usbmuxd" in notices["A4"]
    # No session for any of them (the MTP phone's simulated adbd was never contacted).
    assert out["sessions"] == [] and out["results"] == []
    assert not steps_of(out, "connect")


def test_eight_phones_at_once_each_in_its_slot(run_agent_bench: BenchRunner) -> None:
    ports = [f"1-{hub}.{n}" for hub in (1, 2) for n in range(1, 5)]
    serials = [f"EIGHT{n:02d}" for n in range(8)]
    slots = {port: f"S{n}" for n, port in enumerate(ports)}
    steps: list[dict[str, Any]] = [
        {"op": "plug", "port": port, "profile": "pixel_adb", "serial": serial}
        for port, serial in zip(ports, serials, strict=True)
    ]
    steps.append({"op": "completed", "count": 8})
    out = run_agent_bench(steps, sims=serials, slots=slots)
    got = {r["serial"]: (r["slot"], r["outcome"]) for r in out["results"]}
    assert got == {s: (f"S{n}", "erased") for n, s in enumerate(serials)}
    assert len(out["sessions"]) == 8 and out["certificates"] == 8
    assert set(out["power_cycles"].values()) == {1}
