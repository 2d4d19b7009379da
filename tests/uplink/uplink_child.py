"""Run the uplink in a child process (killed by test_uplink_killed.py): deliver forever."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from wipeagent.clock import Clock
from wipeagent.store import Store
from wipeagent.uplink.client import Uplink, UplinkSettings
from wipeagent.uplink.tls import client_context


async def main(journal: str, url: str, ca: str, cert: str, key: str, speed: str) -> None:
    context = client_context(ca=Path(ca), cert=Path(cert), key=Path(key))
    async with Store(Path(journal)) as store:
        uplink = Uplink(store, Clock(float(speed)),
                        UplinkSettings(url=url, timeout_s=1e6), context)
        print("started", flush=True)
        await uplink.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
