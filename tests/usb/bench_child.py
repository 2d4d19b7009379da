"""Runs one scripted USB bench scenario under umockdev and prints what the agent saw (JSON).

Started by tests/usb/conftest.py as `umockdev-wrapper python bench_child.py` with the script
on stdin: {"watcher": {...UsbWatcher kwargs...}, "speed": 20, "steps": [...]}.
Steps: plug (port, profile, serial?, overrides?), unplug (port), uevent (port, action),
claim (port, interface), adb_check (port, adb_port), locate (serial),
usb_connect (serial, key),
start (begin iterating events(); coldplug happens here), settle (wait until the watcher
has reported everything), sleep (bench seconds), mark (bench time now), snapshot,
cli (argv).
Output: {"results": [per-step output or null], "events": [DeviceEvent as JSON, in order]}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from umockdev_bench import Bench

from wipeagent.clock import Clock
from wipeagent.errors import WipeAgentError
from wipeagent.transports.adb import AdbHostKey, AdbUsbEndpoint, connect_adb, locate_usb_serial
from wipeagent.usb import UsbWatcher, check_adb_claim
from wipeagent.usb import cli as usb_cli


async def run(script: dict[str, Any]) -> dict[str, Any]:
    bench = Bench()
    clock = Clock(script.get("speed", 20.0))
    watcher = UsbWatcher(clock, **script.get("watcher", {}))
    events: list[dict[str, Any]] = []
    results: list[Any] = []
    consumer: asyncio.Task[None] | None = None

    async def consume() -> None:
        async for event in watcher.events():
            events.append(event.model_dump(mode="json"))

    for step in script["steps"]:
        op = step["op"]
        out: Any = None
        if op == "plug":
            await bench.plug(
                step["port"], step["profile"], step.get("serial"), **step.get("overrides", {})
            )
        elif op == "unplug":
            await bench.unplug(step["port"])
        elif op == "uevent":
            await bench.uevent(step["port"], step["action"])
        elif op == "claim":
            await bench.claim(step["port"], step["interface"])
        elif op == "start":
            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0.05)
        elif op == "settle":
            # Until quiet: umockdev may hand uevents over late on a busy machine, so wait
            # until no new one arrived for 0.1 s and every port has settled.
            async with asyncio.timeout(30):
                while True:
                    seen = watcher.uevents_seen
                    await asyncio.sleep(0.1)
                    await watcher.settled()
                    if watcher.uevents_seen == seen and not watcher.busy:
                        break
            await asyncio.sleep(0.02)  # let the consumer take the queued events
        elif op == "sleep":
            await clock.sleep(step["seconds"])
        elif op == "adb_check":
            phone = watcher.probe(step["port"])
            assert phone is not None
            check = await check_adb_claim(phone, clock, adb_server_port=step["adb_port"])
            out = {
                **check.model_dump(mode="json"),
                "conflict": check.conflict,
                "message": check.message,
            }
        elif op == "locate":  # where the ADB-over-USB transport would look for a serial
            try:
                where = locate_usb_serial(step["serial"])
                out = {"port_path": where.port_path, "devnode": where.devnode}
            except WipeAgentError as exc:
                out = {"error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        elif op == "usb_connect":  # connect_adb over USB (umockdev cannot carry ADB itself)
            key = AdbHostKey.load_or_create(Path(step["key"]))
            try:
                async with asyncio.timeout(30):
                    conn = await connect_adb(AdbUsbEndpoint(step["serial"]), key, clock,
                                             connect_timeout_s=5, auth_timeout_s=5)
                await conn.close()
                out = {"connected": True}
            except WipeAgentError as exc:
                out = {"error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        elif op == "mark":
            out = clock.monotonic()
        elif op == "snapshot":
            out = [p.model_dump(mode="json") for p in watcher.snapshot()]
        elif op == "cli":
            parser = argparse.ArgumentParser(prog="wipeagent")
            usb_cli.register(parser.add_subparsers(dest="command"))
            args = parser.parse_args(step["argv"])
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = await asyncio.to_thread(args.func, args)
            out = {"rc": rc, "stdout": buf.getvalue()}
        else:
            raise ValueError(f"unknown step {op!r}")
        results.append(out)
    if consumer is not None:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    return {"results": results, "events": events}


def main() -> None:
    script = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(script))))


if __name__ == "__main__":
    main()
