"""Fixtures for the fake adbd tests, prefixed adb_/tiny_ so they cannot shadow other
simulator tests' fixtures. The phone and key helpers live in adb_fixtures.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from adb_fixtures import HostKey, KeyListingTinyPhone, TinyPhone, make_key

from wipeagent_sim.adb.server import AdbServer, ServerLimits


@pytest.fixture(scope="session")
def adb_host_key(tmp_path_factory: pytest.TempPathFactory) -> HostKey:
    return make_key(tmp_path_factory.mktemp("adbkey"), "adbkey")


@pytest.fixture(scope="session")
def adb_other_host_key(tmp_path_factory: pytest.TempPathFactory) -> HostKey:
    return make_key(tmp_path_factory.mktemp("adbkey2"), "adbkey")


@pytest.fixture
def tiny_phone() -> TinyPhone:
    return KeyListingTinyPhone()


@pytest.fixture
async def adb_server(tiny_phone: TinyPhone) -> AsyncIterator[AdbServer]:
    # Short I/O bounds so a stuck test fails fast (bench seconds at speed 50).
    limits = ServerLimits(io_timeout=100.0, idle_timeout=500.0)
    async with AdbServer(tiny_phone, "127.0.0.1", 0, limits=limits) as srv:
        yield srv
