"""Bench slots: which label the technician sees for a physical USB port.

A port is named by its kernel path (`1-3.2`: bus 1, root port 3, hub port 2). The path is
physical, so a phone that resets or re-enumerates comes back on the same path and keeps its
slot. A USB 3 connector has two paths (one on the USB 2 bus, one on the USB 3 bus; which one
a phone uses depends on its speed and mode), so several paths may share one label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wipeagent.errors import ConfigError
from wipeagent.usb.model import PORT_PATH_PATTERN, SLOT_PATTERN

_PORT_RE = re.compile(PORT_PATH_PATTERN)
_SLOT_RE = re.compile(SLOT_PATTERN)


def is_port_path(name: str) -> bool:
    """Whether a sysfs name is a device on a port (`1-3.2`), not a root hub or interface."""
    return bool(_PORT_RE.match(name))


class SlotMap:
    """Port path -> slot label, from the bench configuration.

    Unmapped ports get `usb-<path>` so nothing is ever unlabelled.
    """

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._map: dict[str, str] = {}
        for port, label in (mapping or {}).items():
            if not isinstance(port, str) or not _PORT_RE.match(port):
                raise ConfigError(
                    f"slot map: {port!r} is not a USB port path",
                    hint="use the kernel's port path, e.g. 1-3.2 (see `wipeagent usb list`)",
                )
            if not isinstance(label, str) or not _SLOT_RE.match(label):
                raise ConfigError(
                    f"slot map: label {label!r} for port {port} is not allowed",
                    hint="slot labels: 1-32 letters, digits, space . _ : -",
                )
            self._map[port] = label

    @classmethod
    def coerce(cls, slots: SlotMap | Mapping[str, str] | None) -> SlotMap:
        """Accept a SlotMap, a plain dict from config, or None."""
        return slots if isinstance(slots, SlotMap) else cls(slots)

    def label(self, port_path: str) -> str:
        """The slot label for a port path."""
        if port_path in self._map:
            return self._map[port_path]
        return f"usb-{port_path}"

    def ports(self, label: str) -> list[str]:
        """The configured port paths carrying `label` (twin USB 2 / USB 3 paths)."""
        return sorted(p for p, lab in self._map.items() if lab == label)

    def as_dict(self) -> dict[str, str]:
        return dict(self._map)
