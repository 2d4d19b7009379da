"""wipeagent: a bench agent that erases, verifies and certifies phones."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wipeagent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

TOOL_NAME = "wipeagent"
