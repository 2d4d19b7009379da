"""Per-process limits a big bench needs (sized in docs/service.md, measured by
scripts/bench_sessions.py).

Open files are the limit a bench meets first: each phone holds about two descriptors at a
time (its session's connection — an ADB TCP socket, a usbfs node, or a lockdown socket
through usbmuxd — and, for a moment, a presence probe or a service connection), on top of
about a hundred for the agent itself (the journal, the control API, usbmuxd's listen
connection, netlink, the event loop). The default soft limit of 1024 would stop a bench
near 500 phones. The unit sets LimitNOFILE; `raise_open_files` also lifts the soft limit to
the hard one (up to OPEN_FILES_TARGET) when the agent runs outside systemd.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

OPEN_FILES_TARGET = 16384  # scripts/wipeagent.service LimitNOFILE: 1,000 phones and margin
DESCRIPTORS_PER_PHONE = 3  # two at a time measured, one spare
DESCRIPTORS_FIXED = 128


def phones_supported(open_files: int) -> int:
    """How many phones a soft open-files limit leaves room for."""
    return max(0, (open_files - DESCRIPTORS_FIXED) // DESCRIPTORS_PER_PHONE)


def raise_open_files(target: int = OPEN_FILES_TARGET) -> int:
    """Raise the soft RLIMIT_NOFILE towards `target` (never above the hard limit, never
    lower it); return the soft limit in force. Logs a warning when it leaves room for fewer
    than 1,000 phones."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft,
                        wanted, exc)
    if soft != resource.RLIM_INFINITY and phones_supported(soft) < 1000:
        log.warning("the open-files limit is %d: room for about %d phones; set "
                    "LimitNOFILE=%d in the unit (docs/service.md)", soft,
                    phones_supported(soft), OPEN_FILES_TARGET)
    return soft
