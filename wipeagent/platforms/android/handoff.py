"""Handing an erased Android phone to its next owner: what Test Harness Mode changed, how
each change is put back from the shell, and what cannot be.

What Test Harness Mode applies after its reset (TestHarnessModeService, AOSP
frameworks/base services/core/java/com/android/server/testharness/, Android 10 to 15;
the versions read are listed in docs/handoff.md):

- before the first boot completes: `device_provisioned` = 1 and `user_setup_complete` = 1
  (the setup wizard is skipped), the lock screen disabled
  (LockPatternUtils.setLockScreenDisabled), `persist.sys.test_harness` = 1;
- once booted: the bench's ADB keys written back from the persistent data block;
  `adb_allowed_connection_time` = 0 (the keys never expire), `adb_enabled` = 1
  (Android 13+: AdbService enables ADB itself while persist.sys.test_harness is 1),
  `development_settings_enabled` = 1, the package verifier off for ADB installs
  (`package_verifier_enable` = 0 on Android 10, `verifier_verify_adb_installs` = 0 from
  Android 11), `stay_on_while_plugged_in` = BatteryManager.BATTERY_PLUGGED_ANY,
  `ota_disable_automatic_update` = 1, account auto-sync off
  (ContentResolver.setMasterSyncAutomaticallyAsUser false), location on
  (LocationManager.setLocationEnabledForUser true).

The hand-off puts back what the shell user can put back, reads every value again, and
turns USB debugging off last (after it, nothing more can be asked). What it cannot put
back is recorded as such: `persist.sys.test_harness` (the shell may only set debug.* and
log.* properties), the skipped setup wizard, account auto-sync (no shell command), and
this bench's key in /data/misc/adb/adb_keys (not readable or writable by the shell; it
stays until the next factory reset, and is of no use while USB debugging is off).

Pure: the commands are constants or built from this table; the driver runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from wipeagent.models import HandoffItem, HandoffResult

ADB_ENABLED_GET = "settings get global adb_enabled"
ADB_DISABLE = "settings put global adb_enabled 0"
LOCK_DISABLED_GET = "locksettings get-disabled"
LOCK_ENABLE = "locksettings set-disabled false"
SETUP_COMPLETE_GET = "settings get secure user_setup_complete"
TEST_HARNESS_GET = "getprop persist.sys.test_harness"
LOCATION_GET = "settings get secure location_mode"


@dataclass(frozen=True)
class Setting:
    """A Settings value Test Harness Mode changes, and its out-of-box value."""

    id: str
    title: str
    namespace: str  # global / secure
    key: str
    target: str | None  # None: not set (the platform default applies)
    min_sdk: int = 0
    max_sdk: int = 99
    set_command: str = ""  # when not `settings put/delete`

    @property
    def get(self) -> str:
        return f"settings get {self.namespace} {self.key}"

    @property
    def set(self) -> str:
        if self.set_command:
            return self.set_command
        if self.target is None:
            return f"settings delete {self.namespace} {self.key}"
        return f"settings put {self.namespace} {self.key} {self.target}"


SETTINGS: tuple[Setting, ...] = (
    Setting("package_verifier", "Package verifier for apps installed over USB", "global",
            "package_verifier_enable", None, max_sdk=29),
    Setting("package_verifier", "Package verifier for apps installed over USB", "global",
            "verifier_verify_adb_installs", None, min_sdk=30),
    Setting("automatic_updates", "Automatic system updates", "global",
            "ota_disable_automatic_update", None),
    Setting("stay_awake", "Screen stays on while charging", "global",
            "stay_on_while_plugged_in", "0"),
    Setting("adb_key_expiry", "Expiry of USB debugging authorisations", "global",
            "adb_allowed_connection_time", None),
    Setting("location", "Location", "secure", "location_mode", "0", max_sdk=29),
    Setting("location", "Location", "secure", "location_mode", "0", min_sdk=30,
            set_command="cmd location set-location-enabled false"),
    Setting("developer_options", "Developer options", "global",
            "development_settings_enabled", "0"),
)


def settings_for(sdk: int) -> tuple[Setting, ...]:
    """The settings to put back on this API level (in order; ADB is not among them)."""
    return tuple(s for s in SETTINGS if s.min_sdk <= sdk <= s.max_sdk)


def setting_item(setting: Setting, before: str | None, after: str | None,
                 error: str = "") -> HandoffItem:
    """The item of one setting from its values before and after the hand-off."""
    method = f"{setting.set}; {setting.get}"
    shown = "(not set)"
    if before == setting.target:
        return HandoffItem(id=setting.id, title=setting.title, result=HandoffResult.UNCHANGED,
                           before=before, after=after, method=method,
                           detail=f"already {setting.target or shown}")
    ok = after == setting.target and not error
    return HandoffItem(
        id=setting.id, title=setting.title,
        result=HandoffResult.RESTORED if ok else HandoffResult.FAILED,
        before=before, after=after, method=method,
        detail=(f"{setting.key}: {before or shown} -> {after or shown}" if ok else
                error or f"{setting.key} reads {after or shown}, expected "
                         f"{setting.target or shown}")[:500])


def lock_screen_item(before: bool | None, after: bool | None, error: str = "") -> HandoffItem:
    """The lock screen Test Harness Mode disabled, enabled again (a swipe lock)."""
    method = f"{LOCK_ENABLE}; {LOCK_DISABLED_GET}"
    text = {True: "disabled", False: "enabled", None: "unknown"}
    if before is False:
        return HandoffItem(id="lock_screen", title="Lock screen", result=HandoffResult.UNCHANGED,
                           before="enabled", after=text[after], method=method,
                           detail="the lock screen is on (swipe)")
    ok = after is False and not error
    return HandoffItem(
        id="lock_screen", title="Lock screen",
        result=HandoffResult.RESTORED if ok else HandoffResult.FAILED,
        before=text[before], after=text[after], method=method,
        detail="the lock screen is on again (swipe, no credential)" if ok
        else (error or "locksettings still reports the lock screen disabled")[:500])


def setup_item(setup_complete: str | None) -> HandoffItem:
    """The setup wizard: skipped by Test Harness Mode (or walked through offline by the
    technician for a guided reset); the shell cannot bring it back."""
    if setup_complete != "1":
        return HandoffItem(id="setup_wizard", title="Setup wizard",
                           result=HandoffResult.OBSERVED, before=setup_complete,
                           after=setup_complete, method=SETUP_COMPLETE_GET,
                           detail="setup not completed: the next owner sees the setup wizard")
    return HandoffItem(
        id="setup_wizard", title="Setup wizard", result=HandoffResult.NOT_RESTORABLE,
        before="1", after="1", method=SETUP_COMPLETE_GET,
        detail="setup is marked complete: the next owner does not see the setup wizard "
               "(policy final_reset gives the out-of-box setup)")


def test_harness_item(value: str) -> HandoffItem:
    """persist.sys.test_harness: only a factory reset clears it."""
    if value != "1":
        return HandoffItem(id="test_harness_mode", title="Test Harness Mode flag",
                           result=HandoffResult.UNCHANGED, before=value or None,
                           after=value or None, method=TEST_HARNESS_GET,
                           detail="not in Test Harness Mode")
    return HandoffItem(
        id="test_harness_mode", title="Test Harness Mode flag",
        result=HandoffResult.NOT_RESTORABLE, before="1", after="1", method=TEST_HARNESS_GET,
        detail="persist.sys.test_harness stays 1 until the next factory reset (the shell "
               "may not set persist.sys.* properties); apps asking "
               "ActivityManager.isRunningInUserTestHarness() are told true")


AUTO_SYNC_ITEM = HandoffItem(
    id="auto_sync", title="Automatic sync of accounts", result=HandoffResult.NOT_RESTORABLE,
    before="off", after="off", method="-",
    detail="Test Harness Mode turned account auto-sync off and no shell command turns it "
           "on; the owner turns on Automatically sync app data in Settings > Accounts")

BENCH_KEY_ITEM = HandoffItem(
    id="bench_key", title="This bench's USB debugging key", result=HandoffResult.NOT_RESTORABLE,
    before="authorised", after="authorised", method="-",
    detail="the key stays in /data/misc/adb/adb_keys (not accessible to the shell) until "
           "the next factory reset; it is of no use while USB debugging is off")


def adb_off_item(before: str | None, still_answers: bool | None, detail: str) -> HandoffItem:
    """USB debugging off, confirmed by the phone no longer answering over ADB."""
    result = (HandoffResult.RESTORED if still_answers is False else HandoffResult.FAILED)
    return HandoffItem(
        id="usb_debugging", title="USB debugging", result=result, before=before,
        after="0" if still_answers is False else None,
        method=f"{ADB_DISABLE} (last); then ADB connection attempts with this bench's key",
        detail=detail[:500])
