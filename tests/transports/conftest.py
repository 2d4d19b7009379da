"""Fixtures: a table-driven phone behind the real fake adbd, a host key, a fast clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from table_phone import FAST, TablePhone

from wipeagent.clock import Clock
from wipeagent.transports.adb import AdbEndpoint, AdbHostKey
from wipeagent_sim.adb.server import AdbServer


@pytest.fixture
def clock() -> Clock:
    return Clock(speed=FAST)


@pytest.fixture(scope="session")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> AdbHostKey:
    # RSA key generation takes a moment: one key for the whole test session.
    return AdbHostKey.load_or_create(tmp_path_factory.mktemp("keys") / "adbkey")


@pytest.fixture
def phone(clock: Clock) -> TablePhone:
    return TablePhone(clock=clock)


@pytest.fixture
async def endpoint(phone: TablePhone) -> AsyncIterator[AdbEndpoint]:
    async with AdbServer(phone, "127.0.0.1", 0) as server:
        yield AdbEndpoint("127.0.0.1", server.port)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"
