"""Fixtures: simulated phones (real fake adbd + simulated Android) for the driver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from android_sim import SETTINGS, SPEED, Sim

from wipeagent.clock import Clock
from wipeagent.platforms.android.driver import AndroidDriver
from wipeagent.transports.adb import AdbEndpoint, AdbHostKey
from wipeagent_sim.adb.server import AdbServer
from wipeagent_sim.android.profiles import load_profile


@pytest.fixture(scope="session")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> AdbHostKey:
    return AdbHostKey.load_or_create(tmp_path_factory.mktemp("keys") / "adbkey")


@pytest.fixture
def sim_factory(tmp_path: Path, host_key: AdbHostKey
                ) -> Callable[[str | Path], AbstractAsyncContextManager[Sim]]:
    @asynccontextmanager
    async def make(profile: str | Path) -> AsyncIterator[Sim]:
        clock = Clock(SPEED)
        phone = load_profile(profile, state_dir=tmp_path / "state", clock=clock)
        async with AdbServer(phone, "127.0.0.1", 0) as server:
            endpoint = AdbEndpoint("127.0.0.1", server.port)
            driver = AndroidDriver(endpoint, host_key, clock, SETTINGS)
            try:
                yield Sim(phone, server, endpoint, driver, clock)
            finally:
                await driver.close()
                await phone.wait_power_cycles()

    return make
