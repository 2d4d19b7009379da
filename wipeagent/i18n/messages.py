"""Machine codes -> the English text (msgid) shown for them. The codes are what the API,
the journal and the signed certificate carry; these tables are the only place they turn
into words, in the language of whoever reads them (`wipeagent.i18n.gettext`).
"""

from __future__ import annotations

from wipeagent.i18n import N_, Translator

# Session steps (SessionEvent.step), as the bench shows them.
STEPS: dict[str, str] = {
    "waiting": N_("empty"),
    "connect": N_("connecting"),
    "identify": N_("identifying"),
    "diagnose": N_("checking the phone"),
    "plan": N_("planning the erase"),
    "confirm": N_("waiting for confirmation"),
    "intake": N_("checking the booking"),
    "erase": N_("erasing"),
    "manual_reset": N_("guided manual reset"),
    "await_return": N_("waiting for the phone to restart"),
    "verify": N_("verifying on the phone"),
    "done": N_("finished"),
    "paused": N_("paused (agent stopped)"),
    "resume": N_("resuming"),
    "notice": N_("notice"),
    "imei": N_("waiting for the IMEI"),
    "handoff": N_("handing the phone off"),
    "final_reset": N_("waiting for the final reset"),
    "attention": N_("waiting for you"),
}

# Tile states (BenchState: tile_state) and the counts at the top of the page.
STATES: dict[str, str] = {
    "working": N_("working"),
    "needs_you": N_("needs you"),
    "erased": N_("done, erased"),
    "not_erased": N_("done, not erased"),
    "failed": N_("failed"),
    "empty": N_("empty"),
}

OUTCOMES: dict[str, str] = {
    "erased": N_("ERASED"),
    "erased_with_exceptions": N_("ERASED WITH EXCEPTIONS"),
    "not_erased": N_("NOT ERASED"),
}

# What the phone waits for the technician to do (BenchState `need`).
NEEDS: dict[str, str] = {
    "tap_trust": N_("Unlock the iPhone and tap Trust, then enter its passcode."),
    "unlock_phone": N_("Unlock the phone: it is locked with a passcode and cannot show the "
                       "Trust prompt."),
    "allow_usb_debugging": N_("Unlock the phone and tap Allow USB debugging (tick Always "
                              "allow)."),
    "confirm_erase": N_("Check that this is the right phone, then confirm the erase."),
    "manual_reset": N_("Reset the phone by hand, following the steps below."),
    "scan_intake": N_("Scan the phone's IMEI (or its booking reference, then the IMEI) to "
                      "book it in."),
    "remove_lock_screen": N_("Remove the screen lock (Settings > Security > Screen lock > "
                             "None), then unplug the phone and plug it in again."),
    "remove_google_account": N_("Remove the Google account (Settings > Accounts), then unplug "
                                "the phone and plug it in again."),
    "turn_off_find_my": N_("Turn off Find My (Settings > your name > Find My), then unplug "
                           "the phone and plug it in again."),
    "remove_device_owner": N_("The phone is managed by an organisation: have it released "
                              "from management, then plug it in again."),
    "notice": N_("Look at the phone: the bench cannot talk to it yet."),
    "enter_imei": N_("The phone does not give its IMEI: scan its IMEI barcode (box or SIM "
                     "tray) or type it from *#06#."),
    "final_reset": N_("Erased and verified. Reset it once more from Settings for its next "
                      "owner, leave it at the setup wizard, then confirm the final reset."),
}

# Why a phone was not erased (outcome reason codes; refusal and error codes).
REASONS: dict[str, str] = {
    "lock_screen": N_("The phone has a screen lock, so it cannot be erased by software."),
    "google_account": N_("A Google account is signed in: after a reset the phone would be "
                         "locked by Factory Reset Protection."),
    "device_owner": N_("The phone is managed by an organisation (device owner)."),
    "rooted": N_("The phone is rooted or its bootloader is unlocked; policy refuses such "
                 "phones."),
    "no_software_method": N_("This Android version has no software erase method and policy "
                             "does not allow a manual reset."),
    "find_my": N_("Find My (Activation Lock) is on."),
    "find_my_unknown": N_("The phone did not report whether Find My is on."),
    "not_confirmed": N_("The erase was not confirmed by a technician."),
    "not_booked_in": N_("The phone is not booked in for erasure."),
    "validation_failed": N_("Validation failed: the checks did not confirm that the data is "
                            "gone."),
    "verification_failed": N_("Verification failed: the checks did not confirm that the "
                              "erase completed."),
    "device_gone": N_("The phone disconnected."),
    "device_timeout": N_("The phone stopped answering in time."),
    "protocol_error": N_("The phone answered something the bench could not understand."),
    "bad_device_data": N_("The phone reported invalid data."),
    "identity_mismatch": N_("A different phone came back after the reset."),
    "not_authorised": N_("The phone did not allow this bench to connect."),
    "store_error": N_("The bench's journal could not be written."),
    "device_error": N_("The phone could not be handled."),
    "already_certified": N_("Already certified before the agent started; unplug the phone "
                            "and plug it in again to process it again."),
    "command_failed": N_("The phone refused a command the bench sent it."),
    "usb_interface_busy": N_("Another program holds the phone's USB connection (often an "
                             "adb server): stop it, then unplug the phone and plug it in "
                             "again."),
    "usbmuxd_wire": N_("The iPhone connection service (usbmuxd) answered something the "
                       "bench could not understand."),
    "journal_refused": N_("The bench's journal refused the write."),
    "journal_damaged": N_("The bench's journal is damaged."),
    "journal_behind": N_("The bench's journal went backwards (restored from an older "
                         "copy)."),
    "certificate_error": N_("The certificate could not be made."),
    "internal_error": N_("The agent failed unexpectedly: set the phone aside and report it "
                         "with the agent log."),
    "error": N_("The session failed."),
}

# Deviations from a clean erase (outcome exception codes).
EXCEPTIONS: dict[str, str] = {
    "manual_reset": N_("Manual reset: the technician performed the factory reset under the "
                       "agent's guidance; the agent verified the result but did not execute "
                       "the reset itself."),
    "check_warning": N_("A check warned: %(check)s."),
    "handoff_failed": N_("The hand-off failed: the phone is not in the promised state."),
}

# Refusals of the control API and the bench page (ControlError codes), for the technician.
ERRORS: dict[str, str] = {
    "not_signed_in": N_("Sign in first: nobody is signed in here (or the sign-in ended after "
                        "being idle)."),
    "bad_credentials": N_("Unknown operator or wrong PIN/password."),
    "too_many_attempts": N_("Too many failed sign-ins: wait a few minutes, or ask the "
                            "administrator to reset your PIN."),
    "bad_operator": N_("An operator name is 1-64 letters, digits, spaces or ._@+-"),
    "nothing_to_confirm": N_("No phone on this slot is waiting for a confirmation."),
    "session_changed": N_("This slot holds another session now: look at the phone again."),
    "phone_changed": N_("This slot holds another phone now: look at the phone again."),
    "no_manual_reset": N_("This phone is not in a guided manual reset."),
    "nothing_to_answer": N_("No phone on this slot waits for that (an IMEI or a final "
                            "reset): it may have moved on."),
    "choose_phone": N_("Several phones wait for their IMEI: select the phone's tile, then "
                       "scan again."),
    "bad_intake": N_("Not a valid intake entry: an IMEI (15 digits) or a serial number, "
                     "and a booking reference of up to 100 characters."),
    "no_such_slot": N_("There is no such slot on this bench."),
    "no_such_session": N_("There is no such session."),
    "no_such_certificate": N_("There is no such certificate (yet)."),
    "no_such_entry": N_("That phone is not on the intake list."),
    "session_running": N_("The phone's session is still running: wait for it to finish."),
    "reverify_not_in_place": N_("A finished phone is not checked again in place: unplug it "
                                "and plug it in again."),
    "no_trust_root": N_("The bench has no trust root to check certificates with, so no PDF."),
    "operators_unavailable": N_("The operators file cannot be read: call the "
                                "administrator."),
    "weak_secret": N_("A PIN or password has 6 to 256 characters and no control "
                      "characters."),
    "operator_exists": N_("This operator is already enrolled."),
    "too_many_operators": N_("No more operators can be enrolled on this bench."),
    "bad_host": N_("Open the bench page at the address the agent prints."),
    "bad_scan": N_("Not an IMEI, a serial number or a booking reference: scan again."),
    "bad_imei": N_("Not a valid IMEI (check digit): scan again."),
    "bad_origin": N_("Request from another site refused."),
    "bad_csrf": N_("The page is out of date: reload it."),
    "replayed": N_("This request was already carried out."),
    "unreachable": N_("Cannot reach the agent: is it running?"),
    "timeout": N_("The agent did not answer in time."),
    "too_large": N_("The agent's answer is too large."),
    "bad_answer": N_("The agent's answer could not be read."),
    "http_error": N_("The agent refused the request."),
    "no_such_operator": N_("No operator of that name is enrolled."),
}

CHECK_STATUSES: dict[str, str] = {
    "pass": N_("pass"), "fail": N_("FAIL"), "warn": N_("warning"), "info": N_("info"),
    "skipped": N_("skipped"), "error": N_("error"),
}
CHECK_KINDS: dict[str, str] = {
    "diagnostic": N_("diagnostic"), "precondition": N_("precondition"),
    "verification": N_("verification"), "validation": N_("validation"),
}
ENCRYPTION: dict[str, str] = {
    "file_based": N_("file-based encryption"), "full_disk": N_("full-disk encryption"),
    "none": N_("not encrypted"), "unknown": N_("unknown"),
}
TECHNIQUES: tuple[str, ...] = (
    N_("cryptographic erase via factory reset"),
    N_("factory reset (no encryption)"),
    N_("factory reset (encryption not confirmed)"),
    N_("cryptographic erase: Erase All Content and Settings destroys the Data Protection "
       "key hierarchy"),
)
MEDIA_TYPES: tuple[str, ...] = (N_("flash memory (embedded in a mobile phone)"),)


def reason_text(_: Translator, code: str) -> str:
    """A reason code in words (`code` itself when unknown: new codes stay visible)."""
    return _(REASONS[code]) if code in REASONS else code


def exception_text(_: Translator, code: str, titles: dict[str, str] | None = None) -> str:
    """An exception code ("manual_reset", "check_warning:<check id>") in words; `titles`
    maps check ids to their (English) titles."""
    name, _sep, arg = code.partition(":")
    if name == "check_warning":
        return _.fill(EXCEPTIONS["check_warning"], check=_((titles or {}).get(arg, arg)))
    return _(EXCEPTIONS[name]) if name in EXCEPTIONS else code


def code_text(_: Translator, code: str, titles: dict[str, str] | None = None) -> str:
    """A reason or exception code in words (`code` itself when unknown)."""
    if code in REASONS:
        return reason_text(_, code)
    return exception_text(_, code, titles)


def all_codes() -> dict[str, dict[str, str]]:
    """Every code table, for the page's catalogue."""
    return {"steps": STEPS, "states": STATES, "outcomes": OUTCOMES, "needs": NEEDS,
            "reasons": REASONS, "exceptions": EXCEPTIONS, "statuses": CHECK_STATUSES,
            "errors": ERRORS}
