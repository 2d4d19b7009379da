"""Suite-wide: tests that need a real phone run only with WIPEAGENT_HARDWARE=1."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("WIPEAGENT_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="needs a real phone (set WIPEAGENT_HARDWARE=1)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
