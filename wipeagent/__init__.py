"""wipeagent: a bench agent that erases, verifies and certifies phones."""

from __future__ import annotations

from functools import cache

TOOL_NAME = "wipeagent"


@cache
def _version() -> str:
    # importlib.metadata scans the installed distributions: ~30 ms, so only on first use
    # (`wipeagent verify` never needs it; docs/benchmarks.md, CLI start-up).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wipeagent")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
