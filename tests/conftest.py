"""Suite-wide: tests that need a real phone run only with WIPEAGENT_HARDWARE=1; the
private PostgreSQL server (`pg_server`, `pg_url`) for tests that need a real database."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator

import pytest
from pg import PgServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("WIPEAGENT_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="needs a real phone (set WIPEAGENT_HARDWARE=1)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


# -- PostgreSQL (Debian's server, private port and directory; see tests/pg.py) ---------

@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One private PostgreSQL cluster for the whole run (started on first use)."""
    with PgServer.start() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the private cluster, for one test."""
    name = "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16] + \
        f"_{next(_pg_databases)}"
    return pg_server.create_database(name)


_pg_databases = itertools.count()
