"""Fixtures for the uplink tests: a journal with real signed certificates (development
PKI), the reference receiver over mutual TLS on 127.0.0.1, and a fast bench clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from uplink_fixtures import Bench, make_bench

from wipeagent.store import Store


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    store = await Store(tmp_path / "journal.sqlite3").open()
    try:
        yield make_bench(tmp_path, store)
    finally:
        await store.close()
