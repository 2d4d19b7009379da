"""The session's vocabulary: what a session reports as it goes, and what it journals.

Two lists, because they answer two questions:

- `SessionStep` is what people watching the bench see: the `step` of every SessionEvent
  (the CLI, the bench state, metrics labels, log lines, the demo). It says what the
  session is doing *now*.
- `JournalStep` is what the journal holds: the `step` of every row of a session's steps
  table, in the order a session writes them. Replaying them rebuilds the session
  (`session._State.apply`); the store's `sessions.state` column holds the last one.

Both are StrEnums, so a member compares equal to its string and serialises as it (JSON,
SQLite, Prometheus labels), and code that reads an event or a row names the member, never
a loose string. docs/architecture.md lists every member of both (a test checks it).
"""

from __future__ import annotations

from enum import StrEnum


class SessionStep(StrEnum):
    """The `step` of a SessionEvent: what the session (or the agent, for its slot) is
    doing now. Emitted in roughly this order."""

    CONNECT = "connect"  # reaching the phone (transport, authorisation)
    IDENTIFY = "identify"  # the phone said who it is
    RESUME = "resume"  # an unfinished session of this phone is continued
    DIAGNOSE = "diagnose"  # diagnostics read
    PLAN = "plan"  # erase method chosen, or refused
    CONFIRM = "confirm"  # waiting for / got a technician's confirmation (policy confirm)
    INTAKE = "intake"  # booked-in check (policy intake)
    ERASE = "erase"  # erase command sent
    MANUAL_RESET = "manual_reset"  # waiting for the technician's guided reset
    AWAIT_RETURN = "await_return"  # waiting for the phone to come back after the erase
    VERIFY = "verify"  # checking on the phone that the data is gone
    HANDOFF = "handoff"  # leaving the phone in the state for its next owner
    FINAL_RESET = "final_reset"  # waiting for the technician's final reset (policy)
    IMEI = "imei"  # waiting for / got the IMEI from the technician (phone would not say)
    DONE = "done"  # ended (with the outcome, or already certified)
    PAUSED = "paused"  # the session task stopped (unplugged, agent stopping); resumable
    NOTICE = "notice"  # something about a slot that is not a session (a source's hint)
    # The phone waits for a person within its step (tap Trust, unlock, allow USB
    # debugging, scan the barcode): SessionEvent.attention names what, "" when it is over.
    ATTENTION = "attention"


class JournalStep(StrEnum):
    """The `step` of a journal row, in the order a session writes them."""

    IDENTIFY = "identify"  # {"identity"}
    IMEI_ENTERED = "imei_entered"  # {"imeis", "operator", "at"}: typed by the technician
    BOOKED_IN = "booked_in"  # the intake entry (booking) that matches the phone + "at"
    DIAGNOSE = "diagnose"  # {"checks"}
    PLAN = "plan"  # {"checks", "plan" | "refusal"}
    CONFIRMED = "confirmed"  # policy confirm: {"operator", "serial", "at"}
    CANARY = "canary"  # {"canary"}
    ERASE_STARTED = "erase_started"  # {"erase"}: journaled before the command is sent
    RETURNED = "returned"  # {"identity", "at"[, "seen"]}: the phone came back
    VERIFY = "verify"  # {"checks"}
    HANDOFF_STARTED = "handoff_started"  # {"policy", "at"}: the hand-off began
    HANDOFF_LAST = "handoff_last"  # {"items"}: journaled before the step that ends contact
    HANDOFF = "handoff"  # {"handoff"}: the phone's state for its next owner
    OUTCOME = "outcome"  # {"outcome", "category", "reasons", "exceptions", "codes"}
    CERTIFIED = "certified"  # {"certificate_id", "sequence"}: the session is done
    ENDED = "ended"  # done without a certificate (never identified, already certified)
    SUPERSEDED = "superseded"  # {"resumed"}: this run continued an older session
    PAUSED = "paused"  # {"reason", "at_step"}: the agent stopped while it ran


class SessionState(StrEnum):
    """The store's `sessions.state` when it is not the last journal step."""

    STARTED = "started"  # created, nothing journaled yet
    DONE = "done"  # ended: certified or ended; never resumed


# What the bench's `sessions.state` is once nothing more will happen to a session.
TERMINAL_STATES = frozenset({SessionState.DONE})
