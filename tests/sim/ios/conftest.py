"""Fixtures for the simulated iOS bench: a running bench and real pymobiledevice3 clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pymobiledevice3.lockdown import UsbmuxLockdownClient, create_using_usbmux

from wipeagent.clock import Clock
from wipeagent_sim.ios import SimIosBench

# Fast enough that a 135-bench-second erase takes well under a second, slow enough that
# the phone's own 0.5 s "let the reply out" pause stays a few milliseconds.
FAST = 300.0

Connect = Callable[..., Awaitable[UsbmuxLockdownClient]]


@pytest.fixture
async def bench(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SimIosBench]:
    """A bench of the profiles given by `parametrize("bench", [[...]], indirect=True)`
    (default: one clean phone). USBMUXD_SOCKET_ADDRESS points at it."""
    profiles = getattr(request, "param", ["clean"])
    async with SimIosBench(profiles, clock=Clock(FAST)) as b:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", b.address)
        yield b


@pytest.fixture
def connect(bench: SimIosBench, tmp_path: Path) -> Connect:
    """Open a real pymobiledevice3 lockdown client (autopair off) to a phone of the bench."""
    records = tmp_path / "pair-records"

    async def _connect(udid: str, **kwargs: object) -> UsbmuxLockdownClient:
        return await create_using_usbmux(
            serial=udid,
            autopair=False,
            pairing_records_cache_folder=records,
            usbmux_address=bench.address,
            **kwargs,  # type: ignore[arg-type]
        )

    return _connect


@pytest.fixture
def pair(bench: SimIosBench, connect: Connect) -> Connect:
    """Pair with a phone (the person is ready to tap Trust); returns a client in a TLS session."""

    async def _pair(udid: str) -> UsbmuxLockdownClient:
        bench.trust(udid)
        client = await connect(udid)
        await client.pair(timeout=10)
        assert await client.validate_pairing()
        return client

    return _pair
