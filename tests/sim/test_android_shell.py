"""The simulated Android shell: outputs, formats and exit codes of real Android."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from wipeagent.clock import Clock
from wipeagent_sim.adb.backend import ShellResult
from wipeagent_sim.android.phone import SimAndroidPhone
from wipeagent_sim.android.profiles import PROFILE_DIR, load_profile
from wipeagent_sim.android.shell import ShellSyntaxError, parse

FAST = Clock(speed=1000)


Maker = Callable[[str], SimAndroidPhone]


@pytest.fixture
def make(tmp_path: Path) -> Maker:
    def _make(name: str) -> SimAndroidPhone:
        return load_profile(name, state_dir=tmp_path, clock=FAST)

    return _make


@pytest.fixture
def phone(make: Maker) -> SimAndroidPhone:
    return make("pixel8-clean")


async def sh(phone: SimAndroidPhone, line: str) -> ShellResult:
    return await phone.shell(line)


# --- getprop / setprop ------------------------------------------------------------------


async def test_getprop_one_key_and_missing_key(phone: SimAndroidPhone) -> None:
    assert await sh(phone, "getprop ro.product.model") == ShellResult(b"Pixel 8\n", b"", 0)
    assert await sh(phone, "getprop ro.build.version.sdk") == ShellResult(b"34\n", b"", 0)
    # A missing property prints an empty line and still exits 0.
    assert await sh(phone, "getprop ro.does.not.exist") == ShellResult(b"\n", b"", 0)
    assert (await sh(phone, "getprop ro.does.not.exist fallback")).stdout == b"fallback\n"
    # The second operand is a default, not a second name (toolbox getprop.cpp).
    two = await sh(phone, "getprop ro.crypto.state ro.crypto.type")
    assert two == ShellResult(b"encrypted\n", b"", 0)
    three = await sh(phone, "getprop ro.boot.flash.locked ro.boot.verifiedbootstate x")
    assert three == ShellResult(b"", b'getprop: Max 2 arguments (see "getprop --help")\n', 255)


async def test_getprop_all_is_sorted_bracket_format(phone: SimAndroidPhone) -> None:
    result = await sh(phone, "getprop")
    lines = result.stdout.decode().splitlines()
    assert result.exit_code == 0
    assert all(re.fullmatch(r"\[[^\]]+\]: \[.*\]", line) for line in lines)
    keys = [line[1 : line.index("]")] for line in lines]
    assert keys == sorted(keys)
    assert (
        "[ro.build.fingerprint]: [google/shiba/shiba:14/AP2A.240905.003/12231197:user/release-keys]"
        in lines
    )
    assert "[ro.crypto.state]: [encrypted]" in lines
    assert "[ro.crypto.type]: [file]" in lines
    assert "[ro.boot.verifiedbootstate]: [green]" in lines
    assert "[ro.boot.flash.locked]: [1]" in lines
    assert "[ro.boot.vbmeta.device_state]: [locked]" in lines
    assert "[ro.serialno]: [38211FDH2004NJ]" in lines


async def test_setprop_refuses_read_only_and_allows_debug(phone: SimAndroidPhone) -> None:
    refused = await sh(phone, "setprop ro.product.model Evil")
    assert refused.exit_code == 1
    assert refused.stderr == (
        b"Failed to set property 'ro.product.model' to 'Evil'.\nSee dmesg for error reason.\n"
    )
    assert (await sh(phone, "getprop ro.product.model")).stdout == b"Pixel 8\n"
    assert (await sh(phone, "setprop persist.sys.test_harness 1")).exit_code == 1
    assert (await sh(phone, "setprop debug.wipe 7 && getprop debug.wipe")).stdout == b"7\n"


async def test_crypto_properties_per_encryption(make: Maker) -> None:
    plain = make("unencrypted")
    assert (await sh(plain, "getprop ro.crypto.state")).stdout == b"unencrypted\n"
    assert (await sh(plain, "getprop ro.crypto.type")).stdout == b"\n"
    assert plain.banner().endswith(b";features=shell_v2,cmd,stat_v2,ls_v2") is False
    assert make("pixel8-clean").banner().endswith(b";features=shell_v2,cmd,stat_v2,ls_v2")
    rooted = make("rooted")
    assert (await sh(rooted, "getprop ro.boot.verifiedbootstate")).stdout == b"orange\n"
    assert (await sh(rooted, "getprop ro.boot.flash.locked")).stdout == b"0\n"
    assert (await sh(rooted, "getprop ro.boot.vbmeta.device_state")).stdout == b"unlocked\n"


# --- settings ----------------------------------------------------------------------------


async def test_settings_get_put_delete_list(phone: SimAndroidPhone) -> None:
    assert (await sh(phone, "settings get global boot_count")).stdout == b"37\n"
    assert await sh(phone, "settings get secure no_such_key") == ShellResult(b"null\n", b"", 0)
    assert await sh(phone, "settings put global wipe_test 42") == ShellResult(b"", b"", 0)
    assert (await sh(phone, "settings get global wipe_test")).stdout == b"42\n"
    listing = (await sh(phone, "settings list global")).stdout.decode().splitlines()
    assert "wipe_test=42" in listing
    assert listing == sorted(listing)
    assert (await sh(phone, "settings delete global wipe_test")).stdout == b"Deleted 1 rows\n"
    assert (await sh(phone, "settings delete global wipe_test")).stdout == b"Deleted 0 rows\n"
    assert (await sh(phone, "settings get system screen_off_timeout")).stdout == b"120000\n"


async def test_settings_errors(phone: SimAndroidPhone) -> None:
    bad_ns = await sh(phone, "settings get nowhere x")
    assert (bad_ns.exit_code, bad_ns.stderr) == (255, b"Invalid namespace 'nowhere'\n")
    bad_verb = await sh(phone, "settings frob global x")
    assert (bad_verb.exit_code, bad_verb.stderr) == (255, b"Invalid command: frob\n")
    assert (await sh(phone, "settings put global only_key")).exit_code == 255


# --- dumpsys ------------------------------------------------------------------------------


async def test_dumpsys_battery_android14(phone: SimAndroidPhone) -> None:
    out = (await sh(phone, "dumpsys battery")).stdout.decode()
    assert out.splitlines() == [
        "Current Battery Service state:",
        "  AC powered: false",
        "  USB powered: true",
        "  Wireless powered: false",
        "  Dock powered: false",
        "  Max charging current: 500000",
        "  Max charging voltage: 5000000",
        "  Charge counter: 3420000",
        "  status: 2",
        "  health: 2",
        "  present: true",
        "  level: 78",
        "  scale: 100",
        "  voltage: 4012",
        "  temperature: 291",
        "  technology: Li-ion",
        "  Charging state: 1",
        "  Charging policy: 1",
    ]


async def test_dumpsys_battery_old_android_and_cycle_count(make: Maker) -> None:
    old = make("android9")
    out = (await sh(old, "dumpsys battery")).stdout.decode()
    assert "  status: 2" in out and "  technology: Li-poly" in out
    assert "Charging state" not in out and "Dock powered" not in out
    # Cycle count is not in dumpsys; where the vendor exposes it, sysfs has it.
    cycles = await sh(make("pixel8-clean"), "cat /sys/class/power_supply/battery/cycle_count")
    assert cycles.stdout == b"212\n"
    assert (await sh(old, "cat /sys/class/power_supply/battery/cycle_count")).exit_code == 1


async def test_dumpsys_account(make: Maker) -> None:
    out = (await sh(make("samsung-frp"), "dumpsys account")).stdout.decode()
    assert "  Accounts: 2\n" in out
    assert "    Account {name=alex.morgan.1987@gmail.com, type=com.google}\n" in out
    assert "    Account {name=alex.morgan.1987@gmail.com, type=com.osp.app.signin}\n" in out
    clean = (await sh(make("pixel8-clean"), "dumpsys account")).stdout.decode()
    assert "  Accounts: 0\n" in clean and "Account {" not in clean


async def test_dumpsys_device_policy_and_dpm(tmp_path: Path) -> None:
    source = PROFILE_DIR / "pixel8-clean.toml"
    text = source.read_text() + (
        '\n[device_owner]\npackage = "com.example.mdm"\nreceiver = ".AdminReceiver"\n'
        'name = "Example MDM"\n'
    )
    custom = tmp_path / "mdm.toml"
    custom.write_text(text)
    owned = load_profile(custom, state_dir=tmp_path, clock=FAST)
    out = (await sh(owned, "dumpsys device_policy")).stdout.decode()
    assert "  Device Owner: \n" in out
    assert "    admin=ComponentInfo{com.example.mdm/com.example.mdm.AdminReceiver}\n" in out
    assert "    package=com.example.mdm\n" in out
    owners = await sh(owned, "dpm list-owners")
    assert owners.stdout == b"1 owner:\nUser  0: admin=com.example.mdm/.AdminReceiver,DeviceOwner\n"
    plain = load_profile("pixel8-clean", state_dir=tmp_path, clock=FAST)
    assert "Device Owner" not in (await sh(plain, "dumpsys device_policy")).stdout.decode()
    assert (await sh(plain, "dpm list-owners")).stdout == b"no owners\n"


async def test_dumpsys_diskstats_and_df_agree(make: Maker) -> None:
    phone = make("pixel8-clean")
    stats = (await sh(phone, "dumpsys diskstats")).stdout.decode()
    match = re.search(r"^Data-Free: (\d+)K / (\d+)K total = (\d+)% free$", stats, re.M)
    assert match is not None
    free, total = int(match.group(1)), int(match.group(2))
    assert total == 115003100
    assert "File-based Encryption: true" in stats
    df = (await sh(phone, "df /data")).stdout.decode().splitlines()
    assert df[0].split() == [
        "Filesystem",
        "1K-blocks",
        "Used",
        "Available",
        "Use%",
        "Mounted",
        "on",
    ]
    fields = df[1].split()
    assert fields[5] == "/data"
    assert int(fields[1]) == total and int(fields[3]) == free
    assert int(fields[2]) + int(fields[3]) == total
    plain = (await sh(make("unencrypted"), "dumpsys diskstats")).stdout.decode()
    assert "File-based Encryption" not in plain
    assert (
        await sh(phone, "dumpsys nosuchservice")
    ).stderr == b"Can't find service: nosuchservice\n"


# --- packages -----------------------------------------------------------------------------


async def test_pm_list_packages_filters(make: Maker) -> None:
    phone = make("samsung-frp")
    third = (await sh(phone, "pm list packages -3")).stdout.decode().splitlines()
    assert sorted(third) == ["package:com.instagram.android", "package:com.whatsapp"]
    system = (await sh(phone, "pm list packages -s")).stdout.decode().splitlines()
    assert "package:com.android.settings" in system
    assert "package:com.sec.android.app.launcher" in system
    assert "package:com.whatsapp" not in system
    with_path = (await sh(phone, "pm list packages -3 -f whatsapp")).stdout.decode()
    assert re.fullmatch(
        r"package:/data/app/~~[\w-]+==/com\.whatsapp-[\w-]+==/base\.apk=com\.whatsapp\n", with_path
    )
    assert (await sh(phone, "cmd package list packages -3")).stdout.decode().count("package:") == 2


async def test_pm_path(phone: SimAndroidPhone) -> None:
    found = await sh(phone, "pm path com.android.settings")
    assert found == ShellResult(b"package:/system/priv-app/Settings/Settings.apk\n", b"", 0)
    assert await sh(phone, "pm path com.not.installed") == ShellResult(b"", b"", 1)


# --- identity and misc --------------------------------------------------------------------


async def test_identity_commands(phone: SimAndroidPhone) -> None:
    assert (await sh(phone, "whoami")).stdout == b"shell\n"
    ident = (await sh(phone, "id")).stdout.decode()
    assert ident.startswith("uid=2000(shell) gid=2000(shell) groups=2000(shell),")
    assert ident.rstrip().endswith("context=u:r:shell:s0")
    assert (await sh(phone, "wm size")).stdout == b"Physical size: 1080x2400\n"
    assert (await sh(phone, "uname")).stdout == b"Linux\n"
    assert (
        await sh(phone, "uname -r")
    ).stdout == b"5.15.149-android14-11-g6f5c7b0e0c1b-ab12231197\n"
    assert (await sh(phone, "uname -a")).stdout.decode().startswith("Linux localhost 5.15.149")


async def test_unknown_command_and_missing_path(phone: SimAndroidPhone) -> None:
    assert await sh(phone, "frobnicate --now") == ShellResult(
        b"", b"/system/bin/sh: frobnicate: inaccessible or not found\n", 127
    )
    assert await sh(phone, "/system/xbin/su -c id") == ShellResult(
        b"", b"/system/bin/sh: /system/xbin/su: inaccessible or not found\n", 127
    )
    assert (await sh(phone, "su -c id")).exit_code == 127


async def test_root_detection(make: Maker) -> None:
    clean, rooted = make("pixel8-clean"), make("rooted")
    assert await sh(clean, "which su") == ShellResult(b"", b"", 1)
    assert await sh(rooted, "which su") == ShellResult(b"/system/bin/su\n", b"", 0)
    assert (await sh(clean, "ls /system/xbin/su")).stderr == (
        b"ls: /system/xbin/su: No such file or directory\n"
    )
    assert (await sh(rooted, "ls /system/bin/su")).stdout == b"/system/bin/su\n"
    # su exists but nobody on the phone grants the bench root.
    assert await sh(rooted, "su -c id") == ShellResult(b"", b"Permission denied\n", 1)
    magisk = (await sh(rooted, "pm list packages com.topjohnwu.magisk")).stdout
    assert magisk == b"package:com.topjohnwu.magisk\n"


async def test_locksettings(make: Maker) -> None:
    assert (await sh(make("pixel8-clean"), "locksettings get-disabled")).stdout == b"true\n"
    locked = make("locked")
    assert (await sh(locked, "locksettings get-disabled")).stdout == b"false\n"
    verify = await sh(locked, "locksettings verify")
    assert (verify.exit_code, verify.stdout) == (255, b"Old password '' didn't match\n")
    assert locked.failed_unlock_attempts == 1  # a real side effect on a real phone
    ok = await sh(make("samsung-frp"), "locksettings verify")
    assert (ok.exit_code, ok.stdout) == (0, b"Lock credential verified successfully\n")


# --- files ----------------------------------------------------------------------------------


async def test_ls_plain_all_and_long(phone: SimAndroidPhone) -> None:
    plain = (await sh(phone, "ls /sdcard")).stdout.decode().splitlines()
    assert "DCIM" in plain and "Download" in plain and plain == sorted(plain)
    assert (await sh(phone, "ls /storage/emulated/0")).stdout.decode().splitlines() == plain
    every = (await sh(phone, "ls -a /sdcard/DCIM/Camera")).stdout.decode().splitlines()
    assert every == [".", "..", "PXL_20240912_101532123.jpg"]
    long = (await sh(phone, "ls -l /sdcard/DCIM/Camera")).stdout.decode().splitlines()
    assert long[0].startswith("total ")
    assert re.fullmatch(
        r"-rw-rw---- 1 u0_a197 media_rw 48213 2024-09-12 10:05 PXL_20240912_101532123\.jpg",
        long[1],
    )


async def test_data_is_not_readable_for_shell(phone: SimAndroidPhone) -> None:
    assert await sh(phone, "ls /data") == ShellResult(b"", b"ls: /data: Permission denied\n", 1)
    assert await sh(phone, "cat /data/system/users/0.xml") == ShellResult(
        b"", b"cat: /data/system/users/0.xml: Permission denied\n", 1
    )
    assert (await sh(phone, "ls /data/media/0")).exit_code == 1
    assert (await sh(phone, "ls -ld /data")).stdout.decode().startswith("drwxrwx--x ")
    assert (await sh(phone, "ls /data/local/tmp")).exit_code == 0


async def test_cat_rm_mkdir_touch(phone: SimAndroidPhone) -> None:
    notes = await sh(phone, "cat /sdcard/Documents/notes.txt")
    assert notes.stdout == b"door code 4471\nsort out the insurance claim\n"
    assert (
        await sh(phone, "cat /sdcard/nope")
    ).stderr == b"cat: /sdcard/nope: No such file or directory\n"
    assert (await sh(phone, "cat /sdcard/DCIM")).stderr == b"cat: /sdcard/DCIM: Is a directory\n"
    assert await sh(phone, "rm /sdcard/nope") == ShellResult(
        b"", b"rm: /sdcard/nope: No such file or directory\n", 1
    )
    assert await sh(phone, "rm -f /sdcard/nope") == ShellResult(b"", b"", 0)
    assert (await sh(phone, "rm /sdcard/DCIM")).stderr == b"rm: /sdcard/DCIM: Is a directory\n"
    assert (await sh(phone, "mkdir /sdcard/DCIM")).stderr == b"mkdir: '/sdcard/DCIM': File exists\n"
    assert (await sh(phone, "mkdir /sdcard/x/y")).exit_code == 1
    assert (await sh(phone, "mkdir -p /sdcard/x/y && touch /sdcard/x/y/z")).exit_code == 0
    assert "/sdcard/x/y/z" in phone.user_files()
    assert (await sh(phone, "rm -rf /sdcard/x")).exit_code == 0
    assert not any(p.startswith("/sdcard/x/") for p in phone.user_files())
    assert (
        await sh(phone, "rm /system/bin/ls")
    ).stderr == b"rm: /system/bin/ls: Read-only file system\n"
    assert (await sh(phone, "test -e /system/bin/ls")).exit_code == 0


async def test_redirections(phone: SimAndroidPhone) -> None:
    assert (
        await sh(phone, "echo one > /data/local/tmp/f && echo two >> /data/local/tmp/f")
    ).exit_code == 0
    assert (await sh(phone, "cat /data/local/tmp/f")).stdout == b"one\ntwo\n"
    assert await sh(phone, "cat /nope 2>/dev/null") == ShellResult(b"", b"", 1)
    assert await sh(phone, "cat /nope 2>&1") == ShellResult(
        b"cat: /nope: No such file or directory\n", b"", 1
    )
    assert await sh(phone, "echo x > /system/evil") == ShellResult(
        b"", b"/system/bin/sh: can't create /system/evil: Read-only file system\n", 1
    )
    assert (await sh(phone, "echo x > /data/evil")).stderr == (
        b"/system/bin/sh: can't create /data/evil: Permission denied\n"
    )
    # A digit with spaces around it is an argument, not a file descriptor.
    await sh(phone, "echo 2 > /data/local/tmp/two")
    assert (await sh(phone, "cat /data/local/tmp/two")).stdout == b"2\n"


async def test_sha256sum_and_stat(phone: SimAndroidPhone) -> None:
    path = "/sdcard/DCIM/Camera/PXL_20240912_101532123.jpg"
    data = phone.read_file(path)
    assert data is not None and len(data) == 48213
    out = await sh(phone, f"sha256sum {path}")
    assert out.stdout == f"{hashlib.sha256(data).hexdigest()}  {path}\n".encode()
    missing = await sh(phone, "sha256sum /sdcard/none")
    assert (missing.exit_code, missing.stderr) == (
        1,
        b"sha256sum: /sdcard/none: No such file or directory\n",
    )
    stat = await sh(phone, f"stat -c '%n|%s|%a|%A|%F|%Y' {path}")
    assert stat.stdout == f"{path}|48213|660|-rw-rw----|regular file|1726135532\n".encode()
    assert (await sh(phone, "stat -c %F /sdcard/DCIM")).stdout == b"directory\n"
    assert (await sh(phone, "stat -c %s /sdcard/none")).exit_code == 1


async def test_test_builtin(phone: SimAndroidPhone) -> None:
    cases = {
        "test -e /sdcard/Documents/notes.txt": 0,
        "test -f /sdcard/Documents/notes.txt": 0,
        "test -d /sdcard/Documents/notes.txt": 1,
        "test -d /sdcard/Documents": 0,
        "test -e /sdcard/missing": 1,
        "test -e /data/system": 1,
        "[ -f /sdcard/Documents/notes.txt ]": 0,
        "test ! -e /sdcard/missing": 0,
        "test a = a": 0,
        "test 3 -gt 4": 1,
    }
    for line, expected in cases.items():
        assert (await sh(phone, line)).exit_code == expected, line


# --- grammar --------------------------------------------------------------------------------


async def test_lists_and_exit_status(phone: SimAndroidPhone) -> None:
    assert (await sh(phone, "true; false")).exit_code == 1
    assert (await sh(phone, "false; true")).exit_code == 0
    assert (await sh(phone, "false && echo no || echo yes")).stdout == b"yes\n"
    assert (await sh(phone, "true || echo no && echo yes")).stdout == b"yes\n"
    assert (await sh(phone, "cat /nope 2>/dev/null; echo rc=$?")).stdout == b"rc=1\n"
    assert (await sh(phone, "getprop ro.x | grep -c x")).stdout == b"0\n"


async def test_quoting_keeps_words_and_metacharacters(phone: SimAndroidPhone) -> None:
    assert (await sh(phone, "echo 'a;b' \"c  d\" e\\ f")).stdout == b"a;b c  d e f\n"
    assert (await sh(phone, "echo -n x")).stdout == b"x"
    # No command substitution: the text comes back literally and nothing reboots.
    assert (await sh(phone, "echo '$(reboot)'")).stdout == b"$(reboot)\n"
    assert phone.counters.power_cycles == 0


async def test_syntax_errors(phone: SimAndroidPhone) -> None:
    for line in (";", "echo 'x", "true &&", "| cat", "echo > "):
        result = await sh(phone, line)
        assert result.exit_code == 1, line
        assert result.stderr.startswith(b"/system/bin/sh: syntax error"), line


def test_parse_structure() -> None:
    program = parse("a 1 2>/dev/null && b | c > f; d")
    assert [conn for conn, _ in program] == [";", "&&", ";"]
    first = program[0][1][0]
    assert first.words == ["a", "1"]
    assert [(r.fd, r.op, r.target) for r in first.redirects] == [(2, ">", "/dev/null")]
    assert [cmd.words for cmd in program[1][1]] == [["b"], ["c"]]
    with pytest.raises(ShellSyntaxError):
        parse("a &&")


async def test_oversized_command_line_is_refused(phone: SimAndroidPhone) -> None:
    result = await sh(phone, "echo " + "x" * 70000)
    assert result.exit_code == 1 and result.stdout == b""


# --- bad-input profiles ---------------------------------------------------------------------


async def test_invalid_utf8_property_comes_back_as_raw_bytes(make: Maker) -> None:
    phone = make("bad-utf8")
    assert (await sh(phone, "getprop ro.product.model")).stdout == b"Pixel \xff\xfe 8\n"
    assert (await sh(phone, "getprop ro.product.manufacturer")).stdout == b"Goo\xc3\x28gle\n"
    assert b"ro.product.model=Pixel \xff\xfe 8;" in phone.banner()


async def test_metacharacters_are_only_data(make: Maker) -> None:
    phone = make("bad-metachar")
    assert (await sh(phone, "getprop ro.product.model")).stdout == b"Pixel $(reboot); rm -rf /\n"
    assert (await sh(phone, "settings get global device_name")).stdout == (
        b"$(rm -rf /sdcard) | reboot > /dev/null\n"
    )
    assert "/sdcard/Download/$(reboot);.txt" in phone.user_files()
    assert phone.counters.power_cycles == 0


async def test_default_storage_dirs_follow_the_android_version(make: Maker) -> None:
    old = (await sh(make("android9"), "ls /sdcard")).stdout.decode().split()
    assert "Audiobooks" not in old and "Recordings" not in old and "DCIM" in old
    new = (await sh(make("pixel8-clean"), "ls -a /sdcard/Recordings/")).stdout
    assert new == b".\n..\n"
