"""`wipeagent receiver` as a process: the demo's way of running the reference receiver."""

from __future__ import annotations

import asyncio
import signal
import sys

from uplink_fixtures import Bench

from wipeagent.uplink.client import UplinkSettings, deliver_all
from wipeagent.uplink.tls import client_context

# The lead wires register() into wipeagent.cli; this runs the same register() directly.
RUN = (
    "import argparse, sys; from wipeagent.uplink.cli import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='c')); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


async def test_receiver_command_serves_and_stops(bench: Bench) -> None:
    await bench.issue(2)
    store = bench.root / "platform"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN, "receiver", "--listen", "127.0.0.1:0", "--store", str(store),
        "--trust", str(bench.root / "dev-pki" / "ca" / "ca.pem"),
        "--client-ca", str(bench.root / "dev-pki" / "ca" / "ca.pem"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            first = (await proc.stdout.readline()).decode()
            assert "clients trust" in first
            line = (await proc.stdout.readline()).decode()
        url = line.split()[2].rstrip(";")
        assert url.startswith("https://127.0.0.1:") and url.endswith("/v1/certificates")
        context = client_context(ca=store / "tls" / "platform-ca.pem",
                                 cert=bench.root / "dev-pki" / "uplink" / "uplink.pem",
                                 key=bench.root / "dev-pki" / "uplink" / "uplink.key")
        report = await deliver_all(bench.store, url=url, ssl_context=context,
                                   clock=bench.clock,
                                   settings=UplinkSettings(url=url, backoff_initial_s=1))
        assert report.finished and report.delivered == 2
        held = {p.stem: p.read_bytes() for p in store.glob("*.jws")}
        assert held == {r.certificate_id: r.data for r in await bench.store.certificates()}
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
