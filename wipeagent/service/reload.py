"""What a SIGHUP may change while phones are being wiped, and what needs a restart.

Live (applied to every session that *starts* after the reload; sessions in flight keep
the settings they started with, so a phone is never judged by two policies):
  - [policy] (erase mode, refusals, manual reset, destination)
  - station.operator
Restart only (a change is logged and takes effect at the next start):
  everything else: state_dir, station id/site/organisation (they are in every
  certificate and the station chain), certificates (signing key), android endpoints and
  timeouts, usb, ios, control socket, uplink, clock_speed. Changing the phone sources
  live could orphan a session mid-erase; a restart pauses sessions cleanly and resumes
  them from the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wipeagent.config import AgentConfig

LIVE_PREFIXES = ("policy.", "station.operator")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_keys(old: AgentConfig, new: AgentConfig) -> list[str]:
    """Dotted names of every setting whose value differs."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def is_live(key: str) -> bool:
    """True for settings a reload applies without a restart."""
    return any(key == p or key.startswith(p) for p in LIVE_PREFIXES)


@dataclass(frozen=True)
class ReloadPlan:
    """The outcome of comparing the running configuration with the new file."""

    effective: AgentConfig  # the running config with the live changes applied
    live: tuple[str, ...]
    restart_needed: tuple[str, ...]


def plan_reload(running: AgentConfig, new: AgentConfig) -> ReloadPlan:
    """Take the live sections from `new`; keep everything else as it runs now."""
    keys = changed_keys(running, new)
    live = tuple(k for k in keys if is_live(k))
    effective = running.model_copy(update={
        "policy": new.policy,
        "station": running.station.model_copy(update={"operator": new.station.operator}),
    })
    return ReloadPlan(effective, live, tuple(k for k in keys if not is_live(k)))
