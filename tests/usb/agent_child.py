"""Runs the whole agent over an emulated USB bench (umockdev) and prints what happened (JSON).

Started by tests/usb/conftest.py (`run_agent_bench`) as `umockdev-wrapper python
agent_child.py` with the script on stdin:

    {"tmp": dir, "speed": 50, "fold_window": 0.5, "slots": {port: label},
     "sims": [serial, ...],            # simulated Android phones (pixel8-clean, this serial)
     "gate": "allow" | "hold_first",   # hold_first: a phone's first erase gate never opens
     "usbmuxd": path,                  # usbmuxd address the source probes for iPhones
     "steps": [...]}

Steps: plug (port, profile, serial), unplug (port) -- both also plug / unplug the simulated
phone with that serial; usb_plug / usb_unplug (USB only, e.g. a reboot); wait (slot?, step,
count?: until that many observer events of `step` [in `slot`] were seen), completed (count:
until that many sessions ended), sleep (bench seconds).

The USB side is real (libudev via pyudev sees umockdev's devices and uevents, folded by
UsbWatcher, translated by UsbSource); only the driver factory differs from production: it
maps each USB serial to the simulated phone with that serial, reached over TCP, because
umockdev cannot carry ADB bulk transfers.
Output: {"events": [...], "results": [...], "sessions": [...], "certificates": n,
"power_cycles": {serial: n}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from umockdev_bench import Bench

from wipeagent.assemble import Paths, android_settings, build_agent
from wipeagent.clock import Clock
from wipeagent.config import UsbConfig
from wipeagent.platforms.android.driver import AndroidDriver
from wipeagent.platforms.base import PlatformDriver
from wipeagent.session import ALLOW, GateRequest, GateVerdict, SessionEvent
from wipeagent.sources.usb import make_usb_source
from wipeagent.steps import SessionStep
from wipeagent.transports.adb import AdbEndpoint, AdbHostKey
from wipeagent.usb.model import UsbPhone
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.android.profiles import resolve_profile_path
from wipeagent_sim.demo import demo_config

STEP_TIMEOUT = 60.0  # real seconds for any one wait


def sim_profiles(tmp: Path, serials: list[str]) -> list[Path]:
    """pixel8-clean once per serial, each with its own serial (one profile file each)."""
    base = resolve_profile_path("pixel8-clean")
    text = base.read_text(encoding="utf-8")
    original = 'serial = "38211FDH2004NJ"'
    assert original in text
    out = []
    for serial in serials:
        path = tmp / "profiles" / f"usb-{serial}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace(original, f'serial = "{serial}"'), encoding="utf-8")
        out.append(path)
    return out


async def run(script: dict[str, Any]) -> dict[str, Any]:
    tmp = Path(script["tmp"])
    clock = Clock(script.get("speed", 50.0))
    config = demo_config(tmp / "state")
    config = config.model_copy(update={
        "usb": UsbConfig(slots=script.get("slots", {}),
                         fold_window_s=script.get("fold_window", 0.5)),
        "ios": config.ios.model_copy(update={"usbmuxd": script.get("usbmuxd", "")}),
        "android": config.android.model_copy(update={"command_timeout_s": 20,
                                                     "reboot_timeout_s": 200}),
    })
    events: list[dict[str, Any]] = []
    seen = Counter[tuple[str, str]]()
    changed = asyncio.Event()

    def observe(event: SessionEvent) -> None:
        events.append({"slot": event.slot, "step": event.step, "message": event.message,
                       "session": event.session_id,
                       "outcome": event.outcome.value if event.outcome else None})
        seen[(event.slot, event.step)] += 1
        seen[("*", event.step)] += 1
        changed.set()

    gate_calls = Counter[str]()

    async def gate(request: GateRequest) -> GateVerdict:
        serial = request.identity.serial
        gate_calls[serial] += 1
        request.emit(SessionStep.CONFIRM, serial)
        if script.get("gate") == "hold_first" and gate_calls[serial] == 1:
            await asyncio.Event().wait()  # until the session is cancelled (unplugged)
        return ALLOW

    bench = Bench()
    sims = SimBench(profiles=sim_profiles(tmp, script.get("sims", [])) or ["pixel8-clean"],
                    state_dir=tmp / "sims", clock=clock)
    await sims.start()
    agent, store, _ = await build_agent(config, clock=clock, gate=gate, observer=observe)
    key = AdbHostKey.load_or_create(Paths(config.state_path).adb_key)
    settings = android_settings(config)

    def sim_driver(phone: UsbPhone) -> PlatformDriver:
        assert phone.serial is not None
        entry = sims.server_entry(phone.serial)  # KeyError: a phone the test did not simulate
        return AndroidDriver(AdbEndpoint(entry.host, entry.port), key, clock, settings)

    agent.sources = [make_usb_source(config, clock, key, settings, make_driver=sim_driver)]
    runner = asyncio.create_task(agent.run())

    async def until(check: Any) -> None:
        try:
            await wait_until(check)
        except TimeoutError:
            raise AssertionError(f"timed out; seen so far: {events}") from None

    async def wait_until(check: Any) -> None:
        async with asyncio.timeout(STEP_TIMEOUT):
            while not check():
                if runner.done():
                    runner.result()  # an agent that died: raise its error here
                    raise AssertionError("the agent stopped")
                changed.clear()
                waiter = asyncio.create_task(changed.wait())
                await asyncio.wait([waiter, runner], timeout=0.2,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()

    simulated = set(script.get("sims", []))
    on_port: dict[str, str | None] = {}
    try:
        await asyncio.sleep(0.05)  # let the source start (coldplug) before plugging
        for step in script["steps"]:
            op = step["op"]
            if op == "plug":
                # The cable carries both: USB (umockdev) and the simulated phone's ADB.
                on_port[step["port"]] = step.get("serial")
                if step.get("serial") in simulated:
                    sims.plug(step["serial"])
                await bench.plug(step["port"], step["profile"], step.get("serial"))
            elif op == "unplug":
                serial = on_port.pop(step["port"], None)
                if serial in simulated:
                    sims.unplug(serial)
                await bench.unplug(step["port"])
            elif op == "usb_unplug":  # USB only: the phone rebooting, its adbd still known
                await bench.unplug(step["port"])
            elif op == "usb_plug":
                await bench.plug(step["port"], step["profile"], step.get("serial"))
            elif op == "wait":
                want = (step.get("slot", "*"), step["step"])
                count = step.get("count", 1)
                await until(lambda w=want, n=count: seen[w] >= n)
            elif op == "completed":
                await until(lambda n=step["count"]: agent.completed >= n)
            elif op == "sleep":
                await clock.sleep(step["seconds"])
            else:
                raise ValueError(f"unknown step {op!r}")
        cycles = {e.phone.serial: e.phone.counters.power_cycles for e in sims.phones}
        sessions = [
            {"id": s.id, "slot": s.slot, "serial": s.serial, "state": s.state,
             "outcome": s.outcome}
            for s in await store.sessions()
        ]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await store.close()
        await sims.close()
    results = [
        {"slot": r.slot, "session": r.session_id, "outcome": r.outcome.value,
         "serial": r.identity.serial if r.identity else None,
         "certificate": r.certificate is not None}
        for r in agent.results
    ]
    certificates = len(list((tmp / "state" / "certificates").glob("*.jws.json")))
    return {"events": events, "results": results, "sessions": sessions,
            "certificates": certificates, "power_cycles": cycles}


def main() -> None:
    script = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(script))))


if __name__ == "__main__":
    main()
