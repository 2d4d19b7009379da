"""Fixtures: every platform test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fleet import Org
from platform_fixtures import Platform, start_platform


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/platform.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def acme(tmp_path: Path) -> Org:
    return Org.create(tmp_path / "acme", "Acme Refurb")


@pytest.fixture
async def platform(tmp_path: Path, db_url: str, acme: Org) -> AsyncIterator[Platform]:
    running = await start_platform(tmp_path, db_url, [acme])
    try:
        yield running
    finally:
        await running.service.stop()
