"""A small Android shell: mksh's command-line grammar and the toybox/framework commands the
agent runs, answering in the formats (and with the exit codes) of real Android.

Grammar: words split with `shlex` (POSIX quoting), `;` `&&` `||` `&` lists, `|` pipes,
and `>` `>>` `<` `N>` `N>&M` redirections. There is no variable (except `$?`), glob or
`$(...)` expansion: such text stays literal, which is also what makes hostile property values
harmless here. Known limits of splitting with `shlex`: a quoted operator (`echo ';'`) is
still an operator, and `echo 2 > f` (a digit word before a spaced `>`) is read as a
redirection only when the raw line has the digit right against the `>`.

Messages follow the real tools: mksh reports an unknown command as
`/system/bin/sh: NAME: inaccessible or not found` (exit 127); toybox reports errors as
`TOOL: PATH: strerror` (exit 1); framework shell commands (`settings`, `pm`, `cmd ...`)
return -1, which the shell sees as 255.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from wipeagent_sim.adb.backend import ShellResult
from wipeagent_sim.android import binder
from wipeagent_sim.android.phone import (
    HEALTH_CODES,
    STATUS_CODES,
    SYSTEM_BINARIES,
    FsError,
    FsNode,
)
from wipeagent_sim.android.profiles import encode_value

if TYPE_CHECKING:
    from wipeagent_sim.android.phone import SimAndroidPhone

SH = "/system/bin/sh"
MAX_COMMAND_LINE = 64 * 1024
MAX_OUTPUT = 16 << 20
MAX_WORDS = 4096
PATH_DIRS = (
    "/product/bin", "/apex/com.android.runtime/bin", "/apex/com.android.art/bin",
    "/system_ext/bin", "/system/bin", "/system/xbin", "/odm/bin", "/vendor/bin", "/vendor/xbin",
)  # fmt: skip
SHELL_ID = (
    "uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),"
    "1015(sdcard_rw),1028(sdcard_r),1078(ext_data_rw),1079(ext_obb_rw),3001(net_bt_admin),"
    "3002(net_bt),3003(inet),3006(net_bw_stats),3009(readproc),3011(uhid),3012(readtracefs) "
    "context=u:r:shell:s0"
)
# Properties the shell SELinux domain may set; everything else fails like setprop does.
SHELL_SETTABLE_PREFIXES = ("debug.", "log.tag", "persist.log.tag", "persist.debug.")
PROP_VALUE_MAX = 92
FRAMEWORK_ERROR = 255  # a ShellCommand returning -1
CMD_NO_SERVICE = 20  # frameworks/native/cmds/cmd: "Can't find service"


class ShellSyntaxError(Exception):
    """The command line does not parse."""


@dataclass
class Redirect:
    """`fd op target`: op is '>', '>>', '<' or '>&' (target is then an fd number)."""

    fd: int
    op: str
    target: str


@dataclass
class SimpleCommand:
    """Words and redirections of one command."""

    words: list[str] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


# A pipeline is a list of simple commands; a list joins pipelines with ';', '&&', '||'.
Pipeline = list[SimpleCommand]
AndOrList = list[tuple[str, Pipeline]]

_OPERATORS = {";", "&", "&&", "||", "|"}
_REDIRECTS = {">", ">>", "<", ">&", ">|"}


def parse(line: str) -> AndOrList:
    """Parse a command line into (connector, pipeline) pairs; the first connector is ';'."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise ShellSyntaxError("no closing quote") from exc
    if len(tokens) > MAX_WORDS:
        raise ShellSyntaxError("too many words")
    # Digits written right against a redirection operator, in order (see module docstring).
    adjacent_fds = [m.group(1) for m in re.finditer(r"(?:^|[\s;&|])(\d)(?=[<>])", line)]
    result: AndOrList = []
    connector = ";"
    pipeline: Pipeline = []
    current = SimpleCommand()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _REDIRECTS:
            fd = 0 if tok == "<" else 1
            if (
                current.words
                and current.words[-1].isdigit()
                and adjacent_fds
                and adjacent_fds[0] == current.words[-1]
            ):
                fd = int(current.words.pop())
                adjacent_fds.pop(0)
            if i + 1 >= len(tokens) or tokens[i + 1] in _OPERATORS | _REDIRECTS:
                raise ShellSyntaxError(f"'{tok}' unexpected" if i + 1 >= len(tokens) else
                                       f"'{tokens[i + 1]}' unexpected")  # fmt: skip
            target = tokens[i + 1]
            op = ">" if tok == ">|" else tok
            if op == ">&" and not target.isdigit():
                raise ShellSyntaxError(f"{target}: bad file descriptor")
            current.redirects.append(Redirect(fd, op, target))
            i += 2
            continue
        if tok in _OPERATORS:
            if not current.words and not current.redirects:
                raise ShellSyntaxError(f"'{tok}' unexpected")
            pipeline.append(current)
            current = SimpleCommand()
            if tok == "|":
                i += 1
                if i >= len(tokens):
                    raise ShellSyntaxError("'|' unexpected")
                continue
            result.append((connector, pipeline))
            pipeline = []
            connector = ";" if tok in (";", "&") else tok
            i += 1
            continue
        if tok and all(c in "();<>|&" for c in tok):
            raise ShellSyntaxError(f"'{tok}' unexpected")
        current.words.append(tok)
        i += 1
    if current.words or current.redirects:
        pipeline.append(current)
    elif connector in ("&&", "||") or (pipeline and not current.words):
        raise ShellSyntaxError("unexpected end of input")
    if pipeline:
        result.append((connector, pipeline))
    return result


@dataclass
class Io:
    """What one command wrote."""

    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)

    def print(self, text: str = "") -> None:
        """A line on stdout (surrogates become the original bytes)."""
        self.out += encode_value(text) + b"\n"

    def error(self, text: str) -> None:
        """A line on stderr."""
        self.err += encode_value(text) + b"\n"


Handler = Callable[[list[str], bytes, Io], Awaitable[int]]


def _mode_string(node: FsNode) -> str:
    perm = node.mode
    chars = ["d" if node.is_dir else "-"]
    for shift, special, special_char in ((6, 0o4000, "s"), (3, 0o2000, "s"), (0, 0o1000, "t")):
        bits = (perm >> shift) & 7
        chars.append("r" if bits & 4 else "-")
        chars.append("w" if bits & 2 else "-")
        if perm & special:
            chars.append(special_char if bits & 1 else special_char.upper())
        else:
            chars.append("x" if bits & 1 else "-")
    return "".join(chars)


def _date(mtime: int) -> str:
    # The simulated phone's clock runs in UTC.
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M")


def _human(kib: int) -> str:
    value = float(kib) * 1024
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "":
                return f"{int(value)}"
            return f"{value:.1f}{unit}" if value < 10 else f"{round(value)}{unit}"
        value /= 1024
    return f"{value}"  # pragma: no cover


class AndroidShell:
    """Interprets one command line against a `SimAndroidPhone` as the shell user."""

    def __init__(self, phone: SimAndroidPhone) -> None:
        self.phone = phone
        self.commands: dict[str, Handler] = {
            "getprop": self.cmd_getprop, "setprop": self.cmd_setprop,
            "settings": self.cmd_settings, "dumpsys": self.cmd_dumpsys, "pm": self.cmd_pm,
            "cmd": self.cmd_cmd, "id": self.cmd_id, "whoami": self.cmd_whoami,
            "ls": self.cmd_ls, "cat": self.cmd_cat, "rm": self.cmd_rm, "mkdir": self.cmd_mkdir,
            "touch": self.cmd_touch, "echo": self.cmd_echo, "sha256sum": self.cmd_sha256sum,
            "stat": self.cmd_stat, "test": self.cmd_test, "[": self.cmd_bracket,
            "which": self.cmd_which, "locksettings": self.cmd_locksettings, "wm": self.cmd_wm,
            "true": self.cmd_true, "false": self.cmd_false, "uname": self.cmd_uname,
            "df": self.cmd_df, "reboot": self.cmd_reboot, "dpm": self.cmd_dpm,
            "su": self.cmd_su, "grep": self.cmd_grep, "head": self.cmd_head,
            "wc": self.cmd_wc, "service": self.cmd_service, "input": self.cmd_input,
        }  # fmt: skip
        self.builtins = {"echo", "test", "[", "true", "false"}
        self.last_status = 0

    # --- the interpreter --------------------------------------------------------------

    async def run(self, line: str) -> ShellResult:
        """Run a command line; stdout and stderr are collected separately."""
        if len(line) > MAX_COMMAND_LINE:
            return ShellResult(stderr=f"{SH}: command line too long\n".encode(), exit_code=1)
        try:
            program = parse(line)
        except ShellSyntaxError as exc:
            return ShellResult(stderr=f"{SH}: syntax error: {exc}\n".encode(), exit_code=1)
        out, err = bytearray(), bytearray()
        status = 0
        for connector, pipeline in program:
            if (connector == "&&" and status != 0) or (connector == "||" and status == 0):
                continue
            status = await self._run_pipeline(pipeline, out, err)
            self.last_status = status
            if len(out) > MAX_OUTPUT:
                del out[MAX_OUTPUT:]
        return ShellResult(stdout=bytes(out), stderr=bytes(err), exit_code=status)

    async def _run_pipeline(self, pipeline: Pipeline, out: bytearray, err: bytearray) -> int:
        data = b""
        status = 0
        for index, command in enumerate(pipeline):
            last = index == len(pipeline) - 1
            io = Io()
            status = await self._run_simple(command, data, io, err, out if last else None)
            data = bytes(io.out)
        return status

    async def _run_simple(
        self, command: SimpleCommand, stdin: bytes, io: Io, err: bytearray,
        final_out: bytearray | None,
    ) -> int:  # fmt: skip
        """Run one command; route its output through its redirections."""
        fs = self.phone.fs
        # Where fd 1 and 2 go: "out", "err", "null" or a file path (with append flag).
        dest: dict[int, tuple[str, bool]] = {1: ("@out", False), 2: ("@err", False)}
        for redirect in command.redirects:
            if redirect.op == "<":
                try:
                    stdin = b"" if redirect.target == "/dev/null" else fs.read(redirect.target)
                except FsError as exc:
                    err += f"{SH}: can't open {redirect.target}: {exc.strerror}\n".encode()
                    return 1
                continue
            if redirect.op == ">&":
                dest[redirect.fd] = dest.get(int(redirect.target), ("@null", False))
                continue
            target = redirect.target
            if target == "/dev/null":
                dest[redirect.fd] = ("@null", False)
                continue
            append = redirect.op == ">>"
            try:
                # The shell creates (and truncates) the file before the command runs.
                if append:
                    fs.write(target, b"", append=True)
                else:
                    fs.write(target, b"")
            except FsError as exc:
                err += f"{SH}: can't create {target}: {exc.strerror}\n".encode()
                return 1
            dest[redirect.fd] = (target, True)
        status = 0
        if command.words:
            # `$?` is the one expansion the simulation does: `cmd; echo $?` is how a client
            # without shell protocol v2 learns an exit status.
            words = [w.replace("${?}", "$?").replace("$?", str(self.last_status)) for w in
                     command.words]  # fmt: skip
            status = await self._execute(words, stdin, io)
        for fd, data in ((1, bytes(io.out)), (2, bytes(io.err))):
            where, append = dest.get(fd, ("@null", False))
            io_out = io.out if fd == 1 else io.err
            io_out.clear()
            if where == "@out":
                if final_out is not None:
                    final_out += data
                else:
                    io.out += data  # into the pipe
            elif where == "@err":
                err += data
            elif where != "@null" and data:
                try:
                    fs.write(where, data, append=append)
                except FsError as exc:
                    err += f"{SH}: can't create {where}: {exc.strerror}\n".encode()
                    status = 1
        return status

    async def _execute(self, words: list[str], stdin: bytes, io: Io) -> int:
        name = words[0]
        args = words[1:]
        if "/" in name:
            return await self._execute_path(name, args, stdin, io)
        if name in self.builtins:
            return await self.commands[name](args, stdin, io)
        path = self._which(name)
        if path is None:
            io.error(f"{SH}: {name}: inaccessible or not found")
            return 127
        return await self._dispatch(posixpath.basename(path), args, stdin, io)

    async def _execute_path(self, path: str, args: list[str], stdin: bytes, io: Io) -> int:
        try:
            node = self.phone.fs.stat(path)
        except FsError as exc:
            if exc.code == "EACCES":
                io.error(f"{SH}: {path}: can't execute: Permission denied")
                return 126
            io.error(f"{SH}: {path}: inaccessible or not found")
            return 127
        if node.is_dir or not node.mode & 0o111:
            io.error(f"{SH}: {path}: can't execute: Permission denied")
            return 126
        return await self._dispatch(posixpath.basename(path), args, stdin, io)

    async def _dispatch(self, name: str, args: list[str], stdin: bytes, io: Io) -> int:
        handler = self.commands.get(name)
        if handler is None:
            # An executable the simulation has no behaviour for: it runs and does nothing.
            return 0
        return await handler(args, stdin, io)

    def _which(self, name: str) -> str | None:
        for directory in PATH_DIRS:
            path = f"{directory}/{name}"
            node = self.phone.fs.nodes.get(path)
            if node is not None and not node.is_dir and node.mode & 0o111:
                return path
        return None

    # --- properties and settings -------------------------------------------------------

    async def cmd_getprop(self, args: list[str], stdin: bytes, io: Io) -> int:
        """getprop [NAME [DEFAULT]]: all as `[k]: [v]` sorted; a missing name prints ''.

        As system/core/toolbox/getprop.cpp: a second operand is the DEFAULT, not another
        name, and more than two operands are an error."""
        props = self.phone.properties()
        if len(args) > 2:
            io.error('getprop: Max 2 arguments (see "getprop --help")')
            return FRAMEWORK_ERROR
        if not args:
            for key in sorted(props):
                io.print(f"[{key}]: [{props[key]}]")
            return 0
        default = args[1] if len(args) > 1 else ""
        io.print(props.get(args[0], default))
        return 0

    async def cmd_setprop(self, args: list[str], stdin: bytes, io: Io) -> int:
        """setprop NAME VALUE; the shell domain may only set debug/log properties."""
        if len(args) != 2:
            io.error("usage: setprop NAME VALUE\n\nSets an Android system property.\n")
            return 1
        name, value = args
        allowed = name.startswith(SHELL_SETTABLE_PREFIXES) and len(value) < PROP_VALUE_MAX
        if not allowed:
            io.error(f"Failed to set property '{name}' to '{value}'.\nSee dmesg for error reason.")
            return 1
        if name.startswith("persist."):
            self.phone.persist_props[name] = value
        else:
            self.phone.runtime_props[name] = value
        return 0

    async def cmd_settings(self, args: list[str], stdin: bytes, io: Io) -> int:
        """settings [--user N] get|put|delete|list NAMESPACE [KEY [VALUE]]."""
        while args and args[0] in ("--user", "--lineage"):
            args = args[2:]
        if not args:
            io.error("Bad arguments")
            return FRAMEWORK_ERROR
        verb = args[0].lower()
        if verb not in ("get", "put", "delete", "list", "reset"):
            io.error(f"Invalid command: {args[0]}")
            return FRAMEWORK_ERROR
        if len(args) < 2:
            io.error("Bad arguments")
            return FRAMEWORK_ERROR
        namespace = args[1].lower()
        if namespace not in ("system", "secure", "global"):
            io.error(f"Invalid namespace '{args[1]}'")
            return FRAMEWORK_ERROR
        table = self.phone.settings[namespace]
        if verb == "list":
            for line in sorted(f"{k}={v}" for k, v in table.items()):
                io.print(line)
            return 0
        need = {"get": 3, "put": 4, "delete": 3, "reset": 3}[verb]
        if len(args) < need:
            io.error("Bad arguments")
            return FRAMEWORK_ERROR
        key = args[2]
        if verb == "get":
            io.print(table.get(key, "null"))
        elif verb == "put":
            self.phone.put_setting(namespace, key, args[3])
        elif verb == "delete":
            present = key in table
            self.phone.put_setting(namespace, key, None)
            io.print(f"Deleted {1 if present else 0} rows")
        return 0

    # --- services ----------------------------------------------------------------------

    async def cmd_dumpsys(self, args: list[str], stdin: bytes, io: Io) -> int:
        """dumpsys battery | account | device_policy | diskstats."""
        services: dict[str, Callable[[Io], None]] = {
            "battery": self._dump_battery, "account": self._dump_account,
            "device_policy": self._dump_device_policy, "diskstats": self._dump_diskstats,
            "iphonesubinfo": self._dump_iphonesubinfo,
        }  # fmt: skip
        if not args or args[0] == "-l":
            io.print("Currently running services:")
            for name in sorted(services):
                io.print(f"  {name}")
            return 0
        dump = services.get(args[0])
        if dump is None:
            io.error(f"Can't find service: {args[0]}")
            return 0
        dump(io)
        return 0

    def _dump_iphonesubinfo(self, io: Io) -> None:
        io.out += binder.dumpsys_iphonesubinfo(self.phone).encode()

    async def cmd_service(self, args: list[str], stdin: bytes, io: Io) -> int:
        """service call SERVICE CODE [i32 N | s16 STR ...]; service check NAME."""
        if args[:1] == ["call"]:
            out, err, status = binder.service_call(self.phone, args[1:])
            io.out += out.encode("utf-8", "surrogateescape")
            io.err += err.encode()
            return status
        if args[:1] == ["check"] and len(args) > 1:
            found = args[1] == "iphonesubinfo" and self.phone.telephony.answer != "no_service"
            io.print(f"Service {args[1]}: {'found' if found else 'not found'}")
            return 0
        io.print("Usage: service [-h|-?]\n       service list\n       service check SERVICE\n"
                 "       service call SERVICE CODE [i32 N | i64 N | f N | d N | s16 STR ] ...")
        return 0 if not args else binder.SERVICE_ERROR

    def _dump_battery(self, io: Io) -> None:
        battery = self.phone.profile.battery
        sdk = self.phone.sdk
        io.print("Current Battery Service state:")
        io.print(f"  AC powered: {str(battery.ac_powered).lower()}")
        io.print(f"  USB powered: {str(battery.usb_powered).lower()}")
        io.print("  Wireless powered: false")
        if sdk >= 34:
            io.print("  Dock powered: false")
        io.print(f"  Max charging current: {battery.max_charging_current}")
        io.print(f"  Max charging voltage: {battery.max_charging_voltage}")
        io.print(f"  Charge counter: {battery.charge_counter}")
        io.print(f"  status: {STATUS_CODES[battery.status]}")
        io.print(f"  health: {HEALTH_CODES[battery.health]}")
        io.print("  present: true")
        io.print(f"  level: {battery.level}")
        io.print("  scale: 100")
        io.print(f"  voltage: {battery.voltage}")
        io.print(f"  temperature: {battery.temperature}")
        io.print(f"  technology: {battery.technology}")
        if sdk >= 34:
            io.print("  Charging state: 1")
            io.print("  Charging policy: 1")

    def _dump_account(self, io: Io) -> None:
        # AccountManagerService.dump: per user, "Accounts: N" then Account.toString().
        io.print("User UserInfo{0:Owner:c13}:")
        io.print(f"  Accounts: {len(self.phone.accounts)}")
        for account in self.phone.accounts:
            io.print(f"    Account {{name={account.name}, type={account.type}}}")
        io.print()
        io.print("  Active Sessions: 0")
        io.print()

    def _dump_device_policy(self, io: Io) -> None:
        # DevicePolicyManagerService.dump -> Owners.dump ("Device Owner: " + OwnerInfo).
        io.print("Current Device Policy Manager state:")
        io.print("  Immutable state:")
        io.print("    mHasFeature=true")
        io.print("    mIsWatch=false")
        io.print("    mIsAutomotive=false")
        io.print("    mHasTelephonyFeature=true")
        owner = self.phone.device_owner
        if owner is not None:
            receiver = self._full_class(owner.package, owner.receiver)
            io.print("  Device Owner: ")
            io.print(f"    admin=ComponentInfo{{{owner.package}/{receiver}}}")
            io.print(f"    name={owner.name}")
            io.print(f"    package={owner.package}")
            io.print("    isOrganizationOwnedDevice=true")
            io.print("    User ID: 0")
        io.print()
        io.print("  Enabled Device Admins (User 0, provisioningState: "
                 f"{3 if owner else 0}):")  # fmt: skip
        if owner is not None:
            io.print(f"    {owner.package}/{self._short_class(owner.package, owner.receiver)}:")
            io.print("      uid=10234")
            io.print(f"      testOnlyAdmin={'false'}")
        io.print()

    @staticmethod
    def _full_class(package: str, receiver: str) -> str:
        return package + receiver if receiver.startswith(".") else receiver

    @staticmethod
    def _short_class(package: str, receiver: str) -> str:
        full = AndroidShell._full_class(package, receiver)
        return full[len(package) :] if full.startswith(package + ".") else full

    def _dump_diskstats(self, io: Io) -> None:
        storage = self.phone.profile.storage
        total = storage.data_total_kb
        free = total - self.phone.data_used_kb()
        io.print("Latency: 2ms [512B Data Write]")
        io.print(f"Data-Free: {free}K / {total}K total = {free * 100 // total}% free")
        io.print(f"Cache-Free: {free}K / {total}K total = {free * 100 // total}% free")
        io.print(f"System-Free: 0K / {storage.system_total_kb}K total = 0% free")
        if self.phone.profile.device.encryption == "file":
            io.print("File-based Encryption: true")

    async def cmd_pm(self, args: list[str], stdin: bytes, io: Io) -> int:
        """pm list packages [-3|-s|-f|-d|-e|-U] [FILTER]; pm path PACKAGE."""
        if not args:
            io.error("usage: pm [list|path] ...")
            return FRAMEWORK_ERROR
        if args[0] == "list" and len(args) > 1 and args[1] == "packages":
            return self._pm_list_packages(args[2:], io)
        if args[0] == "path":
            if len(args) < 2:
                io.error("Error: no package specified")
                return 1
            for package in self.phone.packages:
                if package.name == args[1]:
                    io.print(f"package:{package.path}")
                    return 0
            return 1  # PackageManagerShellCommand.displayPackageFilePath: nothing printed
        io.error(f"Unknown command: {args[0]}")
        return FRAMEWORK_ERROR

    def _pm_list_packages(self, args: list[str], io: Io) -> int:
        flags: set[str] = set()
        name_filter = None
        for arg in args:
            if arg.startswith("-") and len(arg) > 1:
                for flag in arg[1:]:
                    if flag not in "3sfdeUia":
                        io.error(f"Error: Unknown option: -{flag}")
                        return FRAMEWORK_ERROR
                    flags.add(flag)
            else:
                name_filter = arg
        for package in self.phone.packages:
            if ("3" in flags and package.system) or ("s" in flags and not package.system):
                continue
            if ("d" in flags and package.enabled) or ("e" in flags and not package.enabled):
                continue
            if name_filter is not None and name_filter not in package.name:
                continue
            line = "package:"
            if "f" in flags:
                line += f"{package.path}="
            line += package.name
            if "U" in flags:
                line += " uid:10234" if not package.system else " uid:1000"
            io.print(line)
        return 0

    async def cmd_cmd(self, args: list[str], stdin: bytes, io: Io) -> int:
        """cmd SERVICE ...: testharness (Android 10+), package, settings, lock_settings."""
        if not args:
            io.error("cmd: No service specified; use -l to list all running services.")
            return CMD_NO_SERVICE
        service, rest = args[0], args[1:]
        if service == "testharness" and self.phone.sdk >= 29:
            return self._testharness(rest, io)
        if service == "package":
            return await self.cmd_pm(rest, stdin, io)
        if service == "settings":
            return await self.cmd_settings(rest, stdin, io)
        if service == "lock_settings":
            return await self.cmd_locksettings(rest, stdin, io)
        if service == "location" and self.phone.sdk >= 30:
            return self._location(rest, io)
        io.error(f"cmd: Can't find service: {service}")
        return CMD_NO_SERVICE

    def _location(self, args: list[str], io: Io) -> int:
        # LocationShellCommand (Android 11+): is-location-enabled, set-location-enabled.
        if args[:1] == ["is-location-enabled"]:
            io.print("true" if self.phone.settings["secure"].get("location_mode", "0") != "0"
                     else "false")
            return 0
        if args[:1] == ["set-location-enabled"] and len(args) > 1 and args[1] in ("true",
                                                                                  "false"):
            self.phone.set_location_enabled(args[1] == "true")
            return 0
        io.error(f"Unknown command: {args[0] if args else ''}")
        return FRAMEWORK_ERROR

    def _testharness(self, args: list[str], io: Io) -> int:
        # TestHarnessModeService.TestHarnessModeShellCommand.onCommand
        if not args or args[0] not in ("enable", "restore"):
            if args and args[0] != "help":
                io.error(f"Unknown command: {args[0]}")
                return FRAMEWORK_ERROR
            io.print("Test Harness Mode commands:")
            io.print("  help")
            io.print("  enable|restore")
            return 0
        if self.phone.is_device_secure():
            io.error("Test Harness Mode cannot be enabled if there is a lock screen")
            return 2
        # The FACTORY_RESET broadcast is asynchronous: the command answers 0 first.
        self.phone.request_testharness_reset()
        return 0

    async def cmd_locksettings(self, args: list[str], stdin: bytes, io: Io) -> int:
        """locksettings get-disabled | set-disabled true|false | verify."""
        verb = args[0] if args else ""
        if verb == "get-disabled":
            io.print("true" if self.phone.lock_screen == "none" else "false")
            return 0
        if verb == "set-disabled" and len(args) > 1 and args[1] in ("true", "false"):
            # LockSettingsShellCommand.runSetDisabled: refused while a credential is set.
            if not self.phone.set_lock_screen_disabled(args[1] == "true"):
                io.print("Old password '' didn't match")
                return FRAMEWORK_ERROR
            io.print(f"Lock screen disabled set to {args[1]}")
            return 0
        if verb == "verify":
            if self.phone.is_device_secure():
                # LockSettingsShellCommand.checkCredential reports a failed attempt too.
                self.phone.failed_unlock_attempts += 1
                io.print("Old password '' didn't match")
                return FRAMEWORK_ERROR
            io.print("Lock credential verified successfully")
            return 0
        io.error(f"Unknown command: {verb}" if verb else "No command specified")
        return FRAMEWORK_ERROR

    async def cmd_wm(self, args: list[str], stdin: bytes, io: Io) -> int:
        """wm size."""
        if args[:1] == ["size"]:
            io.print(f"Physical size: {self.phone.profile.device.screen_size}")
            return 0
        io.error(f"Unknown command: {args[0] if args else ''}")
        return FRAMEWORK_ERROR

    async def cmd_input(self, args: list[str], stdin: bytes, io: Io) -> int:
        """input keyevent KEYCODE_WAKEUP | 224 (as AOSP's `input`: silent, exit 0; an
        unknown key code is an IllegalArgumentException, exit 1)."""
        if args[:1] != ["keyevent"] or len(args) < 2:
            io.error("Error: Unknown command or missing arguments")
            return 1
        for key in args[1:]:
            if key not in ("KEYCODE_WAKEUP", "224", "KEYCODE_POWER", "26"):
                io.error(f"Exception occurred while executing 'keyevent':\n"
                         f"java.lang.IllegalArgumentException: Unknown keycode: {key}")
                return 1
            if key in ("KEYCODE_WAKEUP", "224"):
                self.phone.counters.screen_wakeups += 1
        return 0

    async def cmd_dpm(self, args: list[str], stdin: bytes, io: Io) -> int:
        """dpm list-owners (set-device-owner is refused: accounts or not, it is not ours)."""
        if args[:1] == ["list-owners"]:
            owner = self.phone.device_owner
            if owner is None:
                io.print("no owners")
                return 0
            io.print("1 owner:")
            short = self._short_class(owner.package, owner.receiver)
            io.print(f"User  0: admin={owner.package}/{short},DeviceOwner")
            return 0
        io.error(f"Unknown command: {args[0] if args else ''}")
        return FRAMEWORK_ERROR

    async def cmd_reboot(self, args: list[str], stdin: bytes, io: Io) -> int:
        """reboot [-p] [TARGET]: the shell domain may set sys.powerctl, so this works."""
        self.phone.schedule_power_cycle("reboot")
        return 0

    async def cmd_su(self, args: list[str], stdin: bytes, io: Io) -> int:
        """su exists on a rooted phone, but nobody grants the bench root."""
        io.error("Permission denied")
        return 1

    # --- identity ----------------------------------------------------------------------

    async def cmd_id(self, args: list[str], stdin: bytes, io: Io) -> int:
        """id [-u|-g|-n]."""
        if "-u" in args or "-g" in args:
            io.print("shell" if "-n" in args or "-un" in args else "2000")
        elif "-un" in args or "-gn" in args:
            io.print("shell")
        else:
            io.print(SHELL_ID)
        return 0

    async def cmd_whoami(self, args: list[str], stdin: bytes, io: Io) -> int:
        """whoami."""
        io.print("shell")
        return 0

    async def cmd_uname(self, args: list[str], stdin: bytes, io: Io) -> int:
        """uname [-a|-s|-n|-r|-v|-m]."""
        dev = self.phone.profile.device
        fields = {
            "s": "Linux", "n": "localhost", "r": dev.kernel,
            "v": "#1 SMP PREEMPT Mon Jan 15 12:00:00 UTC 2024", "m": "aarch64", "o": "Toybox",
        }  # fmt: skip
        wanted: list[str] = []
        for arg in args:
            if not arg.startswith("-"):
                io.error(f"uname: Unknown option '{arg}'")
                return 1
            for flag in arg[1:]:
                if flag == "a":
                    wanted = list("snrvmo")
                elif flag in fields:
                    wanted.append(flag)
                else:
                    io.error(f"uname: Unknown option '{flag}'")
                    return 1
        io.print(" ".join(fields[f] for f in "snrvmo" if f in (wanted or ["s"])))
        return 0

    async def cmd_df(self, args: list[str], stdin: bytes, io: Io) -> int:
        """df [-h|-k] [PATH...] (toybox)."""
        human = "-h" in args
        paths = [a for a in args if not a.startswith("-")]
        storage = self.phone.profile.storage
        used = self.phone.data_used_kb()
        rows = [
            ("/dev/block/dm-0", storage.system_total_kb, storage.system_total_kb, "/"),
            ("tmpfs", 3797344, 1512, "/dev"),
            (storage.block_device, storage.data_total_kb, used, "/data"),
            ("/dev/fuse", storage.data_total_kb, used, "/storage/emulated"),
        ]
        if paths:
            selected = []
            for path in paths:
                norm = posixpath.normpath(path if path.startswith("/") else "/" + path)
                if norm.startswith(("/sdcard", "/storage")):
                    selected.append(rows[3])
                elif norm == "/data" or norm.startswith("/data/"):
                    selected.append(rows[2])
                elif norm == "/dev" or norm.startswith("/dev/"):
                    selected.append(rows[1])
                else:
                    selected.append(rows[0])
            rows = selected
        io.print(f"{'Filesystem':<16} {'Size' if human else '1K-blocks':>9} {'Used':>9} "
                 f"{'Avail' if human else 'Available':>9} Use% Mounted on")  # fmt: skip
        for name, total, used_kb, mount in rows:
            avail = max(0, total - used_kb)
            pct = (used_kb * 100 + total - 1) // total if total else 0
            cols = (
                (_human(total), _human(used_kb), _human(avail)) if human
                else (str(total), str(used_kb), str(avail))
            )  # fmt: skip
            io.print(f"{name:<16} {cols[0]:>9} {cols[1]:>9} {cols[2]:>9} {pct:>3}% {mount}")
        return 0

    # --- files -------------------------------------------------------------------------

    def _perror(self, io: Io, tool: str, path: str, exc: FsError, quoted: bool = False) -> None:
        shown = f"'{path}'" if quoted else path
        io.error(f"{tool}: {shown}: {exc.strerror}")

    @staticmethod
    def _split_flags(args: list[str], allowed: str) -> tuple[set[str], list[str], str | None]:
        flags: set[str] = set()
        operands: list[str] = []
        only_operands = False
        for arg in args:
            if not only_operands and arg == "--":
                only_operands = True
            elif not only_operands and arg.startswith("-") and len(arg) > 1:
                for flag in arg[1:]:
                    if flag not in allowed:
                        return flags, operands, flag
                    flags.add(flag)
            else:
                operands.append(arg)
        return flags, operands, None

    async def cmd_ls(self, args: list[str], stdin: bytes, io: Io) -> int:
        """ls [-a] [-A] [-l] [-1] [-d] [PATH...] (toybox; one name a line when not a tty)."""
        flags, paths, bad = self._split_flags(args, "aAl1dn")
        if bad:
            io.error(f"ls: Unknown option '{bad}' (see \"ls --help\")")
            return 1
        fs = self.phone.fs
        status = 0
        files: list[tuple[str, FsNode]] = []
        dirs: list[tuple[str, list[tuple[str, FsNode]], FsNode]] = []
        for path in paths or ["."]:
            shown = path
            target = "/" if path == "." else path
            try:
                node = fs.stat(target)
                if node.is_dir and "d" not in flags:
                    entries = fs.listdir(target)
                    dirs.append((shown, entries, node))
                else:
                    files.append((shown, node))
            except FsError as exc:
                self._perror(io, "ls", path, exc)
                status = 1
        if files:
            self._ls_block(files, flags, io, with_total=False)
        for index, (shown, entries, node) in enumerate(dirs):
            if len(dirs) + len(files) > 1:
                if files or index:
                    io.print()
                io.print(f"{shown}:")
            listed = list(entries)
            if "a" in flags:
                listed = [(".", node), ("..", node), *listed]
            elif "A" not in flags:
                listed = [(n, e) for n, e in listed if not n.startswith(".")]
            self._ls_block(listed, flags, io, with_total=True)
        return status

    def _ls_block(
        self, entries: list[tuple[str, FsNode]], flags: set[str], io: Io, with_total: bool
    ) -> None:
        if "l" not in flags and "n" not in flags:
            for name, _ in entries:
                io.print(name)
            return
        if with_total:
            io.print(f"total {sum(((e.size + 4095) // 4096) * 4 for _, e in entries)}")
        rows = []
        for name, node in entries:
            owner = "2000" if "n" in flags and node.owner == "shell" else node.owner
            group = "2000" if "n" in flags and node.group == "shell" else node.group
            links = 2 if node.is_dir else 1
            rows.append((_mode_string(node), str(links), owner, group, str(node.size),
                         _date(node.mtime), name))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(5)] if rows else [0] * 5
        for perm, nlinks, owner, group, size, date, name in rows:
            io.print(
                f"{perm} {nlinks:>{widths[1]}} {owner:<{widths[2]}} {group:<{widths[3]}} "
                f"{size:>{widths[4]}} {date} {name}"
            )

    async def cmd_cat(self, args: list[str], stdin: bytes, io: Io) -> int:
        """cat [FILE...] (stdin without operands)."""
        if not args:
            io.out += stdin
            return 0
        status = 0
        for path in args:
            if path == "-":
                io.out += stdin
                continue
            proc = self.phone.proc_file(path)
            if proc is not None:
                io.out += proc
                continue
            try:
                io.out += self.phone.fs.read(path)
            except FsError as exc:
                self._perror(io, "cat", path, exc)
                status = 1
        return status

    async def cmd_rm(self, args: list[str], stdin: bytes, io: Io) -> int:
        """rm [-f] [-r|-R] PATH..."""
        flags, paths, bad = self._split_flags(args, "frRiv")
        if bad:
            io.error(f"rm: Unknown option '{bad}' (see \"rm --help\")")
            return 1
        if not paths:
            if "f" in flags:
                return 0
            io.error('rm: Needs 1 argument (see "rm --help")')
            return 1
        status = 0
        for path in paths:
            try:
                self.phone.fs.remove(path, recursive=bool(flags & {"r", "R"}))
            except FsError as exc:
                if exc.code == "ENOENT" and "f" in flags:
                    continue
                self._perror(io, "rm", path, exc)
                status = 1
        return status

    async def cmd_mkdir(self, args: list[str], stdin: bytes, io: Io) -> int:
        """mkdir [-p] DIR..."""
        flags, paths, bad = self._split_flags(args, "pv")
        if bad or not paths:
            io.error(f"mkdir: Unknown option '{bad}'" if bad else "mkdir: Needs 1 argument")
            return 1
        status = 0
        for path in paths:
            try:
                self.phone.fs.mkdir(path, parents="p" in flags)
            except FsError as exc:
                self._perror(io, "mkdir", path, exc, quoted=True)
                status = 1
        return status

    async def cmd_touch(self, args: list[str], stdin: bytes, io: Io) -> int:
        """touch FILE..."""
        _, paths, _ = self._split_flags(args, "acm")
        if not paths:
            io.error('touch: Needs 1 argument (see "touch --help")')
            return 1
        status = 0
        now = int(self.phone.clock.now().timestamp())
        for path in paths:
            try:
                self.phone.fs.touch(path, now)
            except FsError as exc:
                self._perror(io, "touch", path, exc, quoted=True)
                status = 1
        return status

    async def cmd_echo(self, args: list[str], stdin: bytes, io: Io) -> int:
        """mksh echo: -n, -e, -E; backslash escapes are interpreted by default."""
        newline, escapes = True, True
        while args and re.fullmatch(r"-[neE]+", args[0]):
            for flag in args[0][1:]:
                newline = newline and flag != "n"
                escapes = flag != "E" if flag in "eE" else escapes
            args = args[1:]
        text = " ".join(args)
        if escapes:
            text, stop = self._echo_escapes(text)
            newline = newline and not stop
        io.out += encode_value(text) + (b"\n" if newline else b"")
        return 0

    @staticmethod
    def _echo_escapes(text: str) -> tuple[str, bool]:
        simple = {"n": "\n", "t": "\t", "\\": "\\", "a": "\a", "b": "\b", "f": "\f",
                  "r": "\r", "v": "\v", "e": "\x1b"}  # fmt: skip
        out: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt == "c":
                    return "".join(out), True
                if nxt in simple:
                    out.append(simple[nxt])
                    i += 2
                    continue
                if nxt == "0":
                    digits = re.match(r"[0-7]{0,3}", text[i + 2 :])
                    octal = digits.group(0) if digits else ""
                    out.append(chr(int(octal or "0", 8)))
                    i += 2 + len(octal)
                    continue
            out.append(char)
            i += 1
        return "".join(out), False

    async def cmd_sha256sum(self, args: list[str], stdin: bytes, io: Io) -> int:
        """sha256sum [FILE...]: `HASH  NAME` lines."""
        paths = [a for a in args if not a.startswith("-") or a == "-"] or ["-"]
        status = 0
        for path in paths:
            try:
                data = stdin if path == "-" else self.phone.fs.read(path)
            except FsError as exc:
                self._perror(io, "sha256sum", path, exc)
                status = 1
                continue
            io.print(f"{hashlib.sha256(data).hexdigest()}  {path}")
        return status

    async def cmd_stat(self, args: list[str], stdin: bytes, io: Io) -> int:
        """stat [-c FORMAT] PATH... (toybox format letters %n %s %a %A %F %U %G %u %g %Y %y
        %X %Z %h %i %b %B %%)."""
        fmt = None
        paths = []
        i = 0
        while i < len(args):
            if args[i] in ("-c", "--format") and i + 1 < len(args):
                fmt = args[i + 1]
                i += 2
                continue
            if args[i].startswith("-c") and len(args[i]) > 2:
                fmt = args[i][2:]
            elif args[i] in ("-L", "-t"):
                pass
            else:
                paths.append(args[i])
            i += 1
        if not paths:
            io.error('stat: Needs 1 argument (see "stat --help")')
            return 1
        status = 0
        for path in paths:
            try:
                node = self.phone.fs.stat(path)
            except FsError as exc:
                self._perror(io, "stat", path, exc, quoted=True)
                status = 1
                continue
            if fmt is None:
                io.print(f"  File: {path}")
                io.print(f"  Size: {node.size}\t Blocks: {(node.size + 511) // 512}\t "
                         f"IO Blocks: 4096\t{self._file_type(node)}")  # fmt: skip
                io.print(f"Access: (0{node.mode & 0o7777:o}/{_mode_string(node)})\t"
                         f"Uid: ({self._uid(node.owner)}/{node.owner:>8})\t"
                         f"Gid: ({self._uid(node.group)}/{node.group:>8})")  # fmt: skip
                io.print(f"Modify: {self._full_time(node.mtime)}")
            else:
                io.print(self._stat_format(fmt, path, node))
        return status

    @staticmethod
    def _file_type(node: FsNode) -> str:
        if node.is_dir:
            return "directory"
        return "regular file" if node.size else "regular empty file"

    @staticmethod
    def _uid(name: str) -> int:
        known = {"root": 0, "system": 1000, "shell": 2000, "media_rw": 1023, "sdcard_rw": 1015}
        if name in known:
            return known[name]
        match = re.fullmatch(r"u0_a(\d+)", name)
        return 10000 + int(match.group(1)) if match else 9997

    @staticmethod
    def _full_time(mtime: int) -> str:
        return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S.000000000 +0000")

    def _stat_format(self, fmt: str, path: str, node: FsNode) -> str:
        values = {
            "n": path, "s": str(node.size), "a": f"{node.mode & 0o7777:o}",
            "A": _mode_string(node), "F": self._file_type(node), "U": node.owner,
            "G": node.group, "u": str(self._uid(node.owner)), "g": str(self._uid(node.group)),
            "Y": str(node.mtime), "X": str(node.mtime), "Z": str(node.mtime),
            "y": self._full_time(node.mtime), "x": self._full_time(node.mtime),
            "z": self._full_time(node.mtime), "h": "2" if node.is_dir else "1",
            "i": str(node.inode), "b": str((node.size + 511) // 512), "B": "512", "%": "%",
        }  # fmt: skip
        return re.sub(r"%(.)", lambda m: values.get(m.group(1), "?"), fmt)

    # --- test, which, true/false -------------------------------------------------------

    async def cmd_bracket(self, args: list[str], stdin: bytes, io: Io) -> int:
        """[ EXPR ]."""
        if not args or args[-1] != "]":
            io.error(f"{SH}: [: missing ]")
            return 2
        return await self.cmd_test(args[:-1], stdin, io)

    async def cmd_test(self, args: list[str], stdin: bytes, io: Io) -> int:
        """test EXPR: file tests (-e -f -d -r -w -x -s), strings, integers, `!`."""
        negate = False
        while args and args[0] == "!":
            negate = not negate
            args = args[1:]
        try:
            result = self._evaluate(args)
        except ValueError as exc:
            io.error(f"{SH}: test: {exc}")
            return 2
        return 0 if result != negate else 1

    def _evaluate(self, args: list[str]) -> bool:
        if not args:
            return False
        if len(args) == 1:
            return args[0] != ""
        if len(args) == 2:
            op, operand = args
            if op == "-n":
                return operand != ""
            if op == "-z":
                return operand == ""
            if op in ("-e", "-f", "-d", "-r", "-w", "-x", "-s", "-L", "-h"):
                return self._file_test(op, operand)
            raise ValueError(f"{op}: unexpected operator")
        if len(args) == 3:
            left, op, right = args
            if op in ("=", "=="):
                return left == right
            if op == "!=":
                return left != right
            ints = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__,
                    "-le": int.__le__, "-gt": int.__gt__, "-ge": int.__ge__}  # fmt: skip
            if op in ints:
                try:
                    return bool(ints[op](int(left), int(right)))
                except ValueError as exc:
                    raise ValueError("bad number") from exc
            raise ValueError(f"{op}: unexpected operator")
        raise ValueError("too many arguments")

    def _file_test(self, op: str, path: str) -> bool:
        fs = self.phone.fs
        try:
            node = fs.stat(path)
        except FsError:
            return False
        if op in ("-L", "-h"):
            return False  # the simulated filesystem has no symbolic links
        if op == "-f":
            return not node.is_dir
        if op == "-d":
            return node.is_dir
        if op == "-s":
            return node.size > 0
        area = fs.resolve(path).area
        if op == "-r":
            return area in ("storage", "tmp", "system") and bool(node.mode & 0o444)
        if op == "-w":
            return area in ("storage", "tmp")
        if op == "-x":
            return bool(node.mode & 0o111)
        return True

    async def cmd_which(self, args: list[str], stdin: bytes, io: Io) -> int:
        """which NAME...: the path of each, exit 1 if any is missing."""
        status = 0 if args else 1
        for name in args:
            path = self._which(name) if "/" not in name else None
            if path is None:
                status = 1
            else:
                io.print(path)
        return status

    async def cmd_true(self, args: list[str], stdin: bytes, io: Io) -> int:
        """true."""
        return 0

    async def cmd_false(self, args: list[str], stdin: bytes, io: Io) -> int:
        """false."""
        return 1

    # --- pipe helpers ------------------------------------------------------------------

    async def cmd_grep(self, args: list[str], stdin: bytes, io: Io) -> int:
        """grep [-i] [-v] [-c] [-q] [-F] [-E] [-e] PATTERN [FILE...]."""
        flags: set[str] = set()
        operands: list[str] = []
        pattern = None
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "-e" and i + 1 < len(args):
                pattern = args[i + 1]
                i += 2
                continue
            if arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("ivcqFEw"):
                flags.update(arg[1:])
            else:
                operands.append(arg)
            i += 1
        if pattern is None:
            if not operands:
                io.error("grep: no pattern")
                return 2
            pattern = operands.pop(0)
        text = pattern if "F" not in flags else re.escape(pattern)
        if "w" in flags:
            text = rf"\b(?:{text})\b"
        try:
            regex = re.compile(text, re.IGNORECASE if "i" in flags else 0)
        except re.error:
            io.error(f"grep: bad regex '{pattern}'")
            return 2
        sources: list[tuple[str, bytes]] = []
        status = 1
        for path in operands or ["-"]:
            try:
                sources.append((path, stdin if path == "-" else self.phone.fs.read(path)))
            except FsError as exc:
                self._perror(io, "grep", path, exc)
                status = 2
        count = 0
        for path, data in sources:
            for raw in data.decode("utf-8", "surrogateescape").splitlines():
                if bool(regex.search(raw)) != ("v" in flags):
                    count += 1
                    if not flags & {"c", "q"}:
                        prefix = f"{path}:" if len(sources) > 1 else ""
                        io.print(prefix + raw)
        if "c" in flags:
            io.print(str(count))
        return 0 if count else status

    async def cmd_head(self, args: list[str], stdin: bytes, io: Io) -> int:
        """head [-n N] (stdin)."""
        count = 10
        if len(args) >= 2 and args[0] == "-n" and args[1].isdigit():
            count = int(args[1])
        elif args and re.fullmatch(r"-\d+", args[0]):
            count = int(args[0][1:])
        lines = stdin.split(b"\n")
        keep = lines[:count]
        io.out += b"\n".join(keep) + (b"\n" if len(lines) > count else b"")
        return 0

    async def cmd_wc(self, args: list[str], stdin: bytes, io: Io) -> int:
        """wc -l (stdin)."""
        io.print(str(stdin.count(b"\n")))
        return 0


def known_commands() -> tuple[str, ...]:
    """Names on /system/bin the shell understands (for documentation and tests)."""
    return SYSTEM_BINARIES
