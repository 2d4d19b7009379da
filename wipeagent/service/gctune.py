"""Garbage collection settings for the long-running agent (measured in docs/benchmarks.md).

CPython's cycle collector runs a young-generation pass every 700 net container allocations
and now and then a full pass over every tracked object. In the agent the heap is mostly
what start-up made (imported modules, classes, schemas, the configuration): objects that
live as long as the process. A full pass walked all of them again and again, which at 256
phones on the bench took 15–50 % of the agent's CPU with pauses of half a second that
stalled the event loop (and with it every phone's I/O).

`tune_gc` runs once start-up is over: it collects what start-up left behind, moves every
object alive at that point into the permanent generation (`gc.freeze`), which the
collector no longer walks, and raises the young-generation threshold so that the many
short-lived objects of a busy event loop (futures, handles, coroutine frames) are mostly
freed by reference counting before any pass looks at them. Cycles are still collected,
only less often; memory stays bounded (docs/benchmarks.md shows peak RSS).
"""

from __future__ import annotations

import gc

# Young-generation threshold (CPython's default is 700), then how many young passes per
# middle pass and middle passes per full pass (defaults 10 and 10).
YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def tune_gc(young: int = YOUNG_THRESHOLD, middle: int = MIDDLE_THRESHOLD,
            old: int = OLD_THRESHOLD) -> None:
    """Call once, after start-up (imports done, agent built, extensions started)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
