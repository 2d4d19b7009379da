"""The agent's garbage-collection settings after start-up (figures: docs/benchmarks.md)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from wipeagent.service.gctune import OLD_THRESHOLD, YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_and_young_passes_are_rarer(restore_gc: None) -> None:
    start_up = object.__new__(type("StartUp", (), {}))  # a tracked object made "at start-up"
    assert gc.is_tracked(start_up)
    tune_gc()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 20, OLD_THRESHOLD)
    # Everything alive at start-up sits in the permanent generation: no pass walks it.
    assert gc.get_freeze_count() > 0
    assert not any(o is start_up for o in gc.get_objects())
    # Cycles made afterwards are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    assert any(o is cycle for o in gc.get_objects())
    del cycle
    assert gc.collect() >= 1
