"""Per-process limits for a big bench: the unit's LimitNOFILE and the agent's own raise."""

from __future__ import annotations

import configparser
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from wipeagent.service.limits import OPEN_FILES_TARGET, phones_supported, raise_open_files

UNIT = Path(__file__).resolve().parents[2] / "scripts" / "wipeagent.service"


@pytest.fixture
def restore_nofile() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_unit_leaves_room_for_a_thousand_phones() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    nofile = int(unit["Service"]["LimitNOFILE"])
    assert nofile == OPEN_FILES_TARGET
    assert phones_supported(nofile) >= 1000
    assert phones_supported(1024) < 500  # the default soft limit would not
    assert 100 <= int(unit["Service"]["TasksMax"]) <= 4096


def test_the_soft_limit_is_raised_up_to_the_hard_one(
        restore_nofile: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    _soft, hard = restore_nofile
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard open-files limit {hard} is below this test's 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    assert raise_open_files(2048) == 2048
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (2048, hard)
    assert "room for about" in caplog.text  # 2048 is not enough for 1,000 phones
    # Never lowered.
    assert raise_open_files(1500) == 2048
