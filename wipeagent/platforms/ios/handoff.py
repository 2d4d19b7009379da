"""Handing an erased iPhone to its next owner: the state it leaves in, as far as lockdown
can tell, and this bench's pairing removed.

An erase (Erase All Content and Settings) already leaves an iPhone in its out-of-box
state: at Setup Assistant, unactivated, trusting no computer. One thing the bench added
afterwards: to verify the erase it paired again, and that pairing lives on the new data
volume; the hand-off asks the phone to forget it (lockdown `Unpair`) and checks that the
phone then refuses a session with it.

What the readings prove and do not prove:
- `ActivationState` and PurpleBuddy `SetupDone` are the phone's own account of itself
  (it is at Setup Assistant and unactivated, as an erased iPhone must be).
- Find My (`com.apple.fmip` `IsAssociated`) read over lockdown says whether the phone
  believes it is associated with a Find My account. Activation Lock is decided by
  Apple's activation server when the phone is next activated, so "not associated" is
  not proof that Activation Lock is off; only activating the phone (or Apple's own
  Activation Lock status) proves it.
"""

from __future__ import annotations

from wipeagent.models import HandoffItem, HandoffResult

SETUP_METHOD = "lockdown GetValue com.apple.PurpleBuddy SetupDone"
ACTIVATION_METHOD = "lockdown GetValue ActivationState"
FIND_MY_METHOD = "lockdown GetValue com.apple.fmip IsAssociated"
UNPAIR_METHOD = ("lockdown Unpair (this bench's pair record); then StartSession with it "
                 "must be refused")


def setup_item(setup_done: bool | None) -> HandoffItem:
    shown = {True: "setup done", False: "at Setup Assistant", None: "not reported"}
    return HandoffItem(
        id="setup_assistant", title="Setup Assistant", result=HandoffResult.OBSERVED,
        before=None, after=shown[setup_done], method=SETUP_METHOD,
        detail="the next owner sets the phone up from the start" if setup_done is False
        else "the phone did not report being at Setup Assistant")


def activation_item(state: str) -> HandoffItem:
    return HandoffItem(
        id="activation_state", title="Activation", result=HandoffResult.OBSERVED,
        after=state or "not reported", method=ACTIVATION_METHOD,
        detail="unactivated: the phone activates with its next owner's SIM and Apple ID"
        if state == "Unactivated" else f"ActivationState {state or 'not reported'}")


def activation_lock_item(associated: bool | None) -> HandoffItem:
    after = {True: "associated", False: "not associated", None: "not reported"}[associated]
    detail = {
        True: "the phone reports a Find My association: Activation Lock will ask for the "
              "previous owner's Apple ID",
        False: "the phone reports no Find My association; this is the phone's own view, "
               "not proof that Activation Lock is off (Apple's activation server decides "
               "at activation)",
        None: "the phone did not report its Find My state: Activation Lock unknown",
    }[associated]
    return HandoffItem(id="activation_lock", title="Activation Lock (Find My)",
                       result=HandoffResult.OBSERVED, after=after, method=FIND_MY_METHOD,
                       detail=detail)


def pairing_item(rejected: bool | None, error: str = "") -> HandoffItem:
    if rejected:
        return HandoffItem(
            id="bench_pairing", title="Pairing with this bench", result=HandoffResult.RESTORED,
            before="paired", after="not paired", method=UNPAIR_METHOD,
            detail="the phone forgot this bench: it trusts no computer")
    return HandoffItem(
        id="bench_pairing", title="Pairing with this bench", result=HandoffResult.FAILED,
        before="paired", after="paired" if rejected is False else None, method=UNPAIR_METHOD,
        detail=(error or "the phone still accepts this bench's pairing")[:500])
