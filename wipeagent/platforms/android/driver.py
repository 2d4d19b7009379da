"""The Android platform driver: identify, diagnose, plan, canary, erase, return, verify.

Talks to one phone through one `AdbConnection`; every command it sends is a constant
from `commands` (the canary token, generated here, is the only variable part and is
validated there). Output is parsed by `parse`, turned into checks by `checks`, `erase`
and `verify`; this module only does the I/O and the waiting.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from wipeagent import attention
from wipeagent.clock import Clock
from wipeagent.errors import (
    BadDeviceData,
    CommandFailed,
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    IdentityMismatch,
    NotAuthorised,
    ProtocolError,
)
from wipeagent.models import (
    Canary,
    CheckResult,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    HandoffItem,
    IdentifierSource,
    Platform,
    Refusal,
)
from wipeagent.platforms.android import checks, erase, imei, verify
from wipeagent.platforms.android import commands as cmd
from wipeagent.platforms.android import handoff as ho
from wipeagent.platforms.android.parse import (
    FINGERPRINT_RE,
    NAME_RE,
    PATCH_RE,
    SDK_RE,
    SERIAL_RE,
    TOKEN_RE,
    VERSION_RE,
    Props,
    check_printable,
    decode_text,
    parse_bool,
    parse_boot_id,
    parse_device_policy,
    parse_df,
    parse_dumpsys_account,
    parse_dumpsys_battery,
    parse_getprop,
    parse_ls_names,
    parse_pm_packages,
    parse_setting,
    parse_uptime,
)
from wipeagent.platforms.base import ErasePolicy
from wipeagent.transports.adb import (
    AdbConnection,
    AdbEndpoint,
    AdbHostKey,
    AnyAdbEndpoint,
    ShellOutput,
    adb_answers,
    connect_adb,
)

log = logging.getLogger(__name__)

# Canary "settings" that are marks, not planted values: what the bench read just before
# the erase, compared after it.
MARK_BOOT_ID = "android.boot_id"
MARK_UPTIME = "android.uptime_s"
MARK_AT = "android.marked_at"
MARK_DATA_USED = "android.data_used_bytes"
MARK_APPS = "android.third_party_apps"

SU_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,200}$")
KEEPALIVE_IDLE = 5  # poll intervals a session's connection may rest before an echo on it
# Bench seconds to confirm USB debugging went off (the phone stops answering ADB).
HANDOFF_PROBE_S = 30.0


@dataclass(frozen=True)
class AndroidDriverSettings:
    """The driver's timeouts and bounds (bench seconds, bytes); defaults match
    wipeagent.config.AndroidConfig."""

    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 60.0
    command_timeout_s: float = 30.0
    max_output_bytes: int = 1 << 20
    reboot_timeout_s: float = 600.0
    manual_reset_timeout_s: float = 1800.0
    poll_interval_s: float = 2.0
    # How often a phone expected back from its reset is looked for (a bare CNXN on TCP,
    # a lookup by serial on USB): fixed and short, so the agent adds little to the cycle.
    probe_interval_s: float = 0.5


AndroidSettings = AndroidDriverSettings  # alias: both names are in use


def _snippet(data: bytes, limit: int = 200) -> str:
    """Phone output made safe for a log line or an error message."""
    return data[:limit].decode("utf-8", "replace").encode("unicode_escape").decode("ascii")


def encryption_type(state: str, crypto_type: str) -> EncryptionType:
    """ro.crypto.state / ro.crypto.type -> EncryptionType (vold's property values)."""
    if state == "encrypted":
        if crypto_type == "file":
            return EncryptionType.FILE_BASED
        if crypto_type in ("block", ""):  # before Android 7 there was no ro.crypto.type
            return EncryptionType.FULL_DISK
        return EncryptionType.UNKNOWN
    if state in ("unencrypted", "unsupported"):
        return EncryptionType.NONE
    return EncryptionType.UNKNOWN


def identity_from_props(props: Props, capacity_bytes: int | None = None) -> DeviceIdentity:
    """Build the validated DeviceIdentity from getprop (BadDeviceData naming a bad key)."""
    manufacturer = props.first(
        ("ro.product.manufacturer", "ro.product.vendor.manufacturer",
         "ro.product.system.manufacturer"), NAME_RE)
    model = props.first(("ro.product.model", "ro.product.vendor.model"), NAME_RE)
    if not manufacturer or not model:
        raise BadDeviceData("getprop: ro.product.manufacturer / ro.product.model missing")
    serial = props.get("ro.serialno", SERIAL_RE)
    boot_serial = props.get("ro.boot.serialno", SERIAL_RE)
    if not (serial or boot_serial):
        raise BadDeviceData("getprop: no ro.serialno or ro.boot.serialno",
                            hint="the phone does not report a serial: set it aside")
    release = props.get("ro.build.version.release", VERSION_RE)
    if not release:
        raise BadDeviceData("getprop: ro.build.version.release missing")
    device = props.get("ro.product.device", TOKEN_RE)
    marketing = props.first(("ro.product.marketname", "ro.config.marketing_name"), NAME_RE)
    # The marketed model number ("SM-S911B", "Pixel 8", "KB2003") is ro.product.model;
    # ro.product.name / ro.product.device are codenames ("dm1qxxx", "shiba") that no buyer
    # knows. Partition builds (Android 10+) may set it only on their own partition.
    model_number = props.first(
        ("ro.product.model", "ro.product.vendor.model", "ro.product.odm.model",
         "ro.product.system.model", "ro.product.product.model"), NAME_RE)
    hardware_ids = {
        "serial": serial, "boot_serial": boot_serial,
        "hardware": props.get("ro.hardware", TOKEN_RE),
        "board": props.get("ro.product.board", TOKEN_RE),
        "device": device, "manufacturer": manufacturer, "model": model,
    }
    return DeviceIdentity(
        platform=Platform.ANDROID,
        manufacturer=manufacturer,
        model=model,
        model_number=model_number,
        marketing_name=marketing,
        serial=serial or boot_serial,
        os_name="Android",
        os_version=release,
        security_patch=props.get("ro.build.version.security_patch", PATCH_RE),
        build_fingerprint=props.get("ro.build.fingerprint", FINGERPRINT_RE),
        storage_capacity_bytes=capacity_bytes,
        encryption=encryption_type(
            props.get("ro.crypto.state", TOKEN_RE), props.get("ro.crypto.type", TOKEN_RE)
        ),
        hardware_ids={k: v for k, v in hardware_ids.items() if v},
    )


def with_phone_ids(identity: DeviceIdentity, ids: imei.PhoneIds) -> DeviceIdentity:
    """The identity with the IMEIs / MEID the phone reported (validated by `imei`). The
    first IMEI joins the identifiers compared after the reset."""
    imeis = tuple(ids.imeis[:4])
    hardware_ids = dict(identity.hardware_ids)
    if imeis:
        hardware_ids["imei"] = imeis[0]
    if ids.meid:
        hardware_ids["meid"] = ids.meid
    return identity.model_copy(update={
        "imeis": imeis, "meid": ids.meid,
        "imei_source": IdentifierSource.PHONE if imeis else None,
        "hardware_ids": hardware_ids,
    })


def sdk_from_props(props: Props) -> int:
    """ro.build.version.sdk as an int (BadDeviceData if absent or not a number)."""
    sdk = props.get("ro.build.version.sdk", SDK_RE)
    if not sdk:
        raise BadDeviceData("getprop: ro.build.version.sdk missing")
    return int(sdk)


def check_printable_lines(text: str) -> str:
    """Text made of printable lines (control characters refused, BadDeviceData)."""
    return "\n".join(check_printable(line, "locksettings verify", 300)
                     for line in text.splitlines()[:5])


class AndroidDriver:
    """PlatformDriver for one Android phone reached over ADB (see platforms.base)."""

    platform = Platform.ANDROID

    def __init__(
        self,
        endpoint: AnyAdbEndpoint,
        key: AdbHostKey,
        clock: Clock,
        settings: AndroidDriverSettings | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.key = key
        self.clock = clock
        self.settings = settings or AndroidDriverSettings()
        self._conn: AdbConnection | None = None
        self._props: Props | None = None
        # True from the erase until the phone is back: await_return watches the phone then.
        self._awaiting_return = False
        self._ids: imei.PhoneIds | None = None
        self._adb_before: str | None = None

    # ---------------------------------------------------------------- plumbing

    def _tag(self) -> str:
        return f"[Android|{self.endpoint}]"

    async def _connection(self) -> AdbConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await connect_adb(
                self.endpoint, self.key, self.clock,
                connect_timeout_s=self.settings.connect_timeout_s,
                auth_timeout_s=self.settings.auth_timeout_s,
            )
        return self._conn

    async def _sh(self, command: str, *, check: bool = True,
                  max_bytes: int | None = None) -> ShellOutput:
        """Run a constant command; CommandFailed on a non-zero exit when `check`."""
        conn = await self._connection()
        out = await conn.shell(
            command, timeout_s=self.settings.command_timeout_s,
            max_output_bytes=max_bytes or self.settings.max_output_bytes,
        )
        if check and out.exit_code not in (0, None):
            raise CommandFailed(
                f"`{command}` failed with exit status {out.exit_code}: "
                f"{_snippet(out.stderr or out.stdout)}"
            )
        return out

    async def _props_now(self) -> Props:
        out = await self._sh(cmd.GETPROP)
        return parse_getprop(out.stdout)

    async def connect(self) -> None:
        """Reach the phone and authenticate (idempotent). DeviceGone / DeviceTimeout when
        nothing answers, NotAuthorised while the phone has not accepted this bench."""
        await self._connection()

    async def _reachable(self, timeout_s: float) -> bool | None:
        """A bare CNXN to a TCP endpoint (no key, nothing runs on the phone); None on USB,
        where only a connect can tell."""
        if isinstance(self.endpoint, AdbEndpoint):
            return await adb_answers(self.endpoint, self.clock, timeout_s=timeout_s)
        return None

    async def answers(self) -> bool | None:
        """Is the phone still there, judged on this session's own connection?

        True: a command succeeded on it lately (KEEPALIVE_IDLE poll intervals), one is
        running now, or a keep-alive echo answered. False: the connection broke (the echo
        found it closed or reset, or it is already gone and the endpoint refuses a bare
        CNXN) — one piece of evidence; the source wants several in a row before it calls
        the phone gone. None: no verdict (no connection yet, the phone in its erase reboot,
        which await_return watches itself, or no answer in time: a late answer on a busy
        agent is not evidence). Never opens a second authenticated connection.
        """
        conn = self._conn
        if self._awaiting_return or conn is None:
            return None
        if not conn.closed:
            # A session at work uses its connection every moment; only one waiting (for
            # the technician, say) gets an echo. Below KEEPALIVE_IDLE poll intervals no
            # echo is sent: on a saturated agent the gaps between commands grow, and
            # echoes then would only add to the load.
            if conn.in_use or conn.idle_s < KEEPALIVE_IDLE * self.settings.poll_interval_s:
                return True
            try:
                # The session's own command bound: an echo slower than that means the
                # connection is dead for the session too; a shorter one would abort a
                # healthy connection whenever the agent is busy.
                await conn.shell(cmd.ALIVE, timeout_s=self.settings.command_timeout_s,
                                 max_output_bytes=4096)
            except DeviceGone:
                return False
            except DeviceError:  # a timeout included: a late answer proves nothing
                return None
            return True
        # The session's connection is gone; is anything still listening where it was?
        return await self._reachable(self.settings.connect_timeout_s)

    # ---------------------------------------------------------------- identify

    async def identify(self) -> DeviceIdentity:
        """getprop (+ df /data for the capacity), validated field by field."""
        props = await self._props_now()
        capacity: int | None = None
        try:
            capacity = parse_df((await self._sh(cmd.DF_DATA)).stdout).total_bytes
        except (CommandFailed, BadDeviceData) as exc:
            log.warning("%s storage capacity unknown: %s", self._tag(), exc)
        identity = identity_from_props(props, capacity)
        # Validated here so diagnose cannot meet a bad value first.
        sdk = sdk_from_props(props)
        self._ids = await self._read_ids(sdk)
        identity = with_phone_ids(identity, self._ids)
        self._props = props
        log.info("%s %s %s serial %s Android %s", self._tag(), identity.manufacturer,
                 identity.model, identity.serial, identity.os_version)
        return identity

    async def _read_ids(self, sdk: int) -> imei.PhoneIds:
        """IMEI(s) / MEID through `service call iphonesubinfo` (see `imei`), per SIM slot;
        `dumpsys iphonesubinfo` on Android 5. A phone that refuses or answers nonsense
        yields no IMEI (the technician enters it), never a session failure."""
        ids = imei.PhoneIds()
        queries = imei.imei_queries(sdk)
        ids.method = "; ".join(f"{q.command} ({q.method})" for q in queries)
        for query in queries:
            out = await self._sh(query.command, check=False, max_bytes=imei.MAX_DUMP_BYTES)
            what = "default phone" if query.slot is None else f"SIM slot {query.slot}"
            try:
                reply = imei.read_reply(out.stdout + out.stderr)
            except BadDeviceData as exc:
                reply = imei.Reply(imei.Answer.UNREADABLE, detail=str(exc)[:160])
            ids.add(reply, what)
            if reply.answer is imei.Answer.NO_SERVICE:
                break
        if sdk < 23 and not ids.imeis and ids.meid is None:
            out = await self._sh(imei.DUMPSYS_IPHONESUBINFO, check=False,
                                 max_bytes=imei.MAX_DUMP_BYTES)
            ids.method += f"; {imei.DUMPSYS_IPHONESUBINFO}"
            try:
                ids.add(imei.read_dumpsys(out.stdout), imei.DUMPSYS_IPHONESUBINFO)
            except BadDeviceData as exc:
                ids.add(imei.Reply(imei.Answer.UNREADABLE, detail=str(exc)[:160]),
                        imei.DUMPSYS_IPHONESUBINFO)
        log.info("%s %d IMEI(s)%s read from the phone", self._tag(), len(ids.imeis),
                 ", a MEID" if ids.meid else "")
        return ids

    # ---------------------------------------------------------------- diagnose

    async def diagnose(self, identity: DeviceIdentity) -> list[CheckResult]:
        """Battery, storage, root, bootloader, accounts, FRP, device owner, lock screen.

        A command that fails or prints something unparseable becomes an ERROR check (the
        plan refuses when a check it relies on is ERROR); a lost connection ends it.
        """
        props = self._props if self._props is not None else await self._props_now()
        results: list[CheckResult] = [
            checks.os_check(props, sdk_from_props(props), identity.os_version)
        ]
        if self._ids is not None:
            results.append(checks.phone_ids_check(self._ids))

        async def battery() -> CheckResult:
            return checks.battery_check(
                parse_dumpsys_battery((await self._sh(cmd.DUMPSYS_BATTERY)).stdout))

        async def storage() -> CheckResult:
            return checks.storage_check(parse_df((await self._sh(cmd.DF_DATA)).stdout))

        async def root() -> CheckResult:
            return checks.root_check(props, await self._su_path(), await self._magisk())

        async def bootloader() -> CheckResult:
            return checks.bootloader_check(props)

        async def accounts() -> list[CheckResult]:
            parsed = parse_dumpsys_account((await self._sh(cmd.DUMPSYS_ACCOUNT)).stdout)
            return [checks.accounts_check(parsed), checks.frp_check(parsed)]

        async def owner() -> CheckResult:
            return checks.device_owner_check(
                parse_device_policy((await self._sh(cmd.DUMPSYS_DEVICE_POLICY)).stdout))

        async def lock() -> CheckResult:
            out = await self._sh(cmd.LOCK_DISABLED)
            if parse_bool(out.stdout, cmd.LOCK_DISABLED):
                return checks.lock_screen_check(True)
            # Exit status is not relied on: the answer's text says what happened.
            answer = await self._sh(cmd.LOCK_VERIFY, check=False, max_bytes=4096)
            text = decode_text(answer.stdout + answer.stderr, cmd.LOCK_VERIFY)
            return checks.lock_screen_check(False, check_printable_lines(text))

        steps = [
            (checks.BATTERY, "Battery", cmd.DUMPSYS_BATTERY, battery),
            (checks.STORAGE, "Storage (/data)", cmd.DF_DATA, storage),
            (checks.ROOT, "Root indicators", cmd.WHICH_SU, root),
            (checks.BOOTLOADER, "Bootloader and verified boot", "getprop", bootloader),
            (checks.DEVICE_OWNER, "Device owner / MDM", cmd.DUMPSYS_DEVICE_POLICY, owner),
            (checks.LOCK_SCREEN, "Lock screen", cmd.LOCK_DISABLED, lock),
        ]
        for check_id, title, method, step in steps:
            try:
                results.append(await step())
            except (CommandFailed, BadDeviceData) as exc:
                results.append(checks.error(check_id, title, method, str(exc)))
        try:
            results.extend(await accounts())
        except (CommandFailed, BadDeviceData) as exc:
            results.append(checks.error(checks.ACCOUNTS, "Accounts on the phone",
                                        cmd.DUMPSYS_ACCOUNT, str(exc)))
            results.append(checks.error(checks.FRP, "Factory Reset Protection risk",
                                        cmd.DUMPSYS_ACCOUNT, str(exc)))
        return results

    async def _su_path(self) -> str | None:
        # `which su` prints the path and exits 0, or prints nothing and exits 1.
        out = await self._sh(cmd.WHICH_SU, check=False, max_bytes=4096)
        text = decode_text(out.stdout, cmd.WHICH_SU).strip()
        if out.exit_code not in (0, None) or not text:
            return None
        first = text.splitlines()[0].rstrip()
        if not SU_PATH_RE.fullmatch(first):
            # Something answered that is not a path: still a sign of tampering.
            raise BadDeviceData(f"which su: unexpected output {_snippet(out.stdout, 80)!r}")
        return first

    async def _magisk(self) -> bool:
        out = await self._sh(cmd.PM_MAGISK, check=False)
        if out.exit_code not in (0, None):
            return False
        return checks.MAGISK_PACKAGE in parse_pm_packages(out.stdout)

    # ---------------------------------------------------------------- plan

    def plan_erase(
        self,
        identity: DeviceIdentity,
        diagnostics: list[CheckResult],
        policy: ErasePolicy,
    ) -> tuple[list[CheckResult], ErasePlan | Refusal]:
        """Pure: see wipeagent.platforms.android.erase.plan_erase."""
        return erase.plan_erase(
            identity, diagnostics, policy,
            reboot_timeout_s=self.settings.reboot_timeout_s,
            manual_reset_timeout_s=self.settings.manual_reset_timeout_s,
        )

    # ---------------------------------------------------------------- canary

    async def plant_canary(self) -> Canary:
        """Write a random token to user storage, /data/local/tmp and a global setting,
        and read each back (DeviceError if any did not stick)."""
        token = secrets.token_hex(16)
        files = cmd.canary_paths(token)
        for path in files:
            await self._sh(cmd.write_file(path, token))
            back = await self._sh(cmd.read_file(path), max_bytes=4096)
            if back.stdout.strip() != token.encode():
                raise DeviceError(f"canary file {path} did not read back",
                                  hint="the phone's storage misbehaves: set it aside")
        await self._sh(cmd.put_canary_setting(token))
        value = parse_setting((await self._sh(cmd.GET_CANARY_SETTING)).stdout,
                              cmd.GET_CANARY_SETTING)
        if value != token:
            raise DeviceError("canary setting did not read back",
                              hint="the phone's settings misbehave: set it aside")
        settings = {f"global.{cmd.CANARY_SETTING}": token, **await self._marks()}
        return Canary(files=files, settings=settings, token=token)

    async def _marks(self) -> dict[str, str]:
        """What a real reset must change, read just before the erase and journaled with
        the canary (so a resumed session compares with the same): the kernel's boot id
        and uptime, when they were read, the used space on /data and whether third-party
        apps were installed."""
        boot_id = parse_boot_id((await self._sh(cmd.BOOT_ID, max_bytes=4096)).stdout)
        uptime = parse_uptime((await self._sh(cmd.UPTIME, max_bytes=4096)).stdout)
        marks = {MARK_BOOT_ID: boot_id, MARK_UPTIME: f"{uptime:.2f}",
                 MARK_AT: self.clock.now().isoformat()}
        try:
            marks[MARK_DATA_USED] = str(parse_df((await self._sh(cmd.DF_DATA)).stdout)
                                        .used_bytes)
        except (CommandFailed, BadDeviceData) as exc:
            log.warning("%s used space unknown before the erase: %s", self._tag(), exc)
        apps = parse_pm_packages((await self._sh(cmd.PM_THIRD_PARTY)).stdout)
        marks[MARK_APPS] = str(len(apps))
        return marks

    # ---------------------------------------------------------------- erase

    async def start_erase(self, plan: ErasePlan) -> None:
        """Run `cmd testharness enable`; for a manual plan nothing runs on the phone."""
        if plan.manual:
            log.info("%s manual reset: waiting for the technician", self._tag())
            return
        if plan.method_id != erase.METHOD_TESTHARNESS:
            raise DeviceError(f"unknown Android erase method {plan.method_id!r}")
        out = await self._sh(cmd.TESTHARNESS_ENABLE, check=False, max_bytes=16 * 1024)
        said = (out.stderr + out.stdout).strip()
        refused = out.exit_code not in (0, None) or (out.exit_code is None and said)
        if refused:
            reason = _snippet(said) or f"exit status {out.exit_code}"
            hint = ("remove the screen lock (Settings > Security), then plug the phone in "
                    "again" if "lock screen" in reason else
                    "the phone refused the erase: set it aside for inspection")
            raise DeviceError(f"the phone refused `{cmd.TESTHARNESS_ENABLE}`: {reason}",
                              hint=hint)
        log.info("%s test harness reset accepted; the phone will reboot", self._tag())

    # ---------------------------------------------------------------- return

    async def await_return(self, expected: DeviceIdentity, plan: ErasePlan) -> DeviceIdentity:
        """Wait until the phone went away and answers again, then check its identity
        before anything else runs (IdentityMismatch lists the differing fields).

        The phone is looked for every `probe_interval_s` (fixed, no back-off): on TCP a
        bare CNXN first and a full connect only once something answers, on USB a connect
        (found by serial). A reset takes tens of seconds; a back-off growing to 16 s made
        the agent add a quarter to every cycle (docs/benchmarks.md)."""
        self._awaiting_return = True
        try:
            return await self._await_return(expected, plan)
        finally:
            self._awaiting_return = False

    async def _await_return(self, expected: DeviceIdentity, plan: ErasePlan) -> DeviceIdentity:
        deadline = self.clock.monotonic() + plan.return_timeout_s
        probe = self.settings.probe_interval_s
        refused_us = False  # the phone is back but has not authorised this bench

        def remaining() -> float:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                if refused_us:
                    raise NotAuthorised(
                        f"the phone came back but did not authorise this bench within "
                        f"{plan.return_timeout_s:.0f} s (its ADB key is no longer accepted)",
                        hint="tap Allow USB debugging on the phone (tick Always allow), or "
                             "set the phone aside: it forgot this bench across the reset")
                raise DeviceTimeout(
                    f"the phone did not restart and come back within "
                    f"{plan.return_timeout_s:.0f} s",
                    hint="check the phone's screen; unplug and plug it in again",
                )
            return left

        # 1. The phone must go away first, or we would verify the un-erased phone.
        conn = self._conn
        if conn is not None and not conn.closed:
            while True:
                try:
                    await conn.shell(cmd.ALIVE, timeout_s=min(
                        self.settings.command_timeout_s, remaining()), max_output_bytes=4096)
                except (DeviceGone, DeviceTimeout) as exc:
                    log.info("%s went away (%s)", self._tag(), type(exc).__name__)
                    break
                await self.clock.sleep(min(probe, remaining()))
            await conn.close()
        self._conn = None
        self._props = None

        # 2. Look for it at a short fixed interval until it answers and has authorised us.
        while True:
            left = remaining()
            # No answer in time (None) may be a busy agent: a connect tells.
            reachable = await self._reachable(min(self.settings.connect_timeout_s, left))
            if reachable is not False:
                try:
                    self._conn = await connect_adb(
                        self.endpoint, self.key, self.clock,
                        connect_timeout_s=min(self.settings.connect_timeout_s, left),
                        auth_timeout_s=min(self.settings.auth_timeout_s, left),
                    )
                    break
                except NotAuthorised:
                    # Expected after a manual reset until the person taps Allow.
                    refused_us = True
                    log.info("%s back, waiting for Allow USB debugging", self._tag())
                    attention.needed(attention.ALLOW_USB_DEBUGGING,
                                     "waiting for Allow USB debugging")
                except (DeviceGone, DeviceTimeout) as exc:
                    refused_us = False
                    log.debug("%s not back yet: %s", self._tag(), exc)
            await self.clock.sleep(min(probe, remaining()))

        # 3. Identity first.
        found = await self.identify()
        differing = expected.mismatches(found)
        if differing:
            await self.close()
            raise IdentityMismatch(
                "a different phone answered after the erase: " + ", ".join(differing)
            )
        return found

    # ---------------------------------------------------------------- verify

    async def verify(
        self, identity: DeviceIdentity, plan: ErasePlan, canary: Canary
    ) -> list[CheckResult]:
        """Validation (accounts, apps, user files, canaries) and verification (reset
        state, encryption, trust) checks, each with its evidence."""
        results: list[CheckResult] = []

        results.append(verify.accounts_gone(
            parse_dumpsys_account((await self._sh(cmd.DUMPSYS_ACCOUNT)).stdout)))
        results.append(verify.packages_gone(
            parse_pm_packages((await self._sh(cmd.PM_THIRD_PARTY)).stdout)))

        top = parse_ls_names((await self._sh(cmd.LIST_SDCARD)).stdout, cmd.LIST_SDCARD)
        non_empty: dict[str, int] = {}
        for name, command in cmd.LIST_DEFAULT_DIR.items():
            if name not in top:
                continue
            entries = parse_ls_names((await self._sh(command)).stdout, command)
            if entries:
                non_empty[name] = len(entries)
        results.append(verify.user_storage_empty(top, non_empty))

        present: dict[str, bool] = {}
        for path in canary.files:
            out = await self._sh(cmd.exists(path), max_bytes=4096)
            answer = decode_text(out.stdout, "test -e").strip()
            if answer not in ("present", "absent"):
                raise BadDeviceData(f"test -e {path}: unexpected answer {answer[:40]!r}")
            present[path] = answer == "present"
        results.append(verify.canary_files_gone(present))
        results.append(verify.canary_setting_gone(
            parse_setting((await self._sh(cmd.GET_CANARY_SETTING)).stdout,
                          cmd.GET_CANARY_SETTING), canary.token))

        boot_count = parse_setting((await self._sh(cmd.BOOT_COUNT)).stdout, cmd.BOOT_COUNT)
        harness = decode_text((await self._sh(cmd.TEST_HARNESS_PROP)).stdout,
                              cmd.TEST_HARNESS_PROP).strip()[:16]
        setup = parse_setting((await self._sh(cmd.SETUP_COMPLETE)).stdout, cmd.SETUP_COMPLETE)
        results.append(verify.settings_recreated(boot_count, harness, setup, plan))
        results.append(await self._rebooted(canary))
        results.append(await self._storage_freed(canary))

        props = self._props if self._props is not None else await self._props_now()
        results.append(verify.encryption_state(identity, encryption_type(
            props.get("ro.crypto.state", TOKEN_RE), props.get("ro.crypto.type", TOKEN_RE))))
        root = checks.root_check(props, await self._su_path(), await self._magisk())
        boot = checks.bootloader_check(props)
        results.append(verify.trust_state(bool(root.evidence.get("rooted")),
                                          bool(boot.evidence.get("unlocked"))))
        return results

    # ---------------------------------------------------------------- hand-off

    async def _read_setting(self, command: str) -> tuple[str | None, str]:
        """A `settings get` value (None: unset), or ("", error) when it could not be read."""
        try:
            return parse_setting((await self._sh(command, max_bytes=4096)).stdout,
                                 command), ""
        except (CommandFailed, BadDeviceData) as exc:
            return None, str(exc)[:200]

    async def _lock_disabled(self) -> tuple[bool | None, str]:
        try:
            out = await self._sh(ho.LOCK_DISABLED_GET, max_bytes=4096)
            return parse_bool(out.stdout, ho.LOCK_DISABLED_GET), ""
        except (CommandFailed, BadDeviceData) as exc:
            return None, str(exc)[:200]

    async def hand_off(self, plan: ErasePlan) -> list[HandoffItem]:
        """Put back each setting Test Harness Mode (or the technician's setup for a manual
        reset) changed, then read every value back (`handoff` lists them and why). USB
        debugging stays on: `finish_hand_off` turns it off last."""
        props = self._props if self._props is not None else await self._props_now()
        settings = ho.settings_for(sdk_from_props(props))
        before = {s: await self._read_setting(s.get) for s in settings}
        lock_before, _ = await self._lock_disabled()
        errors: dict[ho.Setting, str] = {}
        for setting in settings:
            value, read_error = before[setting]
            if value == setting.target and not read_error:
                continue
            out = await self._sh(setting.set, check=False, max_bytes=4096)
            if out.exit_code not in (0, None):
                errors[setting] = (f"`{setting.set}` failed with exit status "
                                   f"{out.exit_code}: {_snippet(out.stderr or out.stdout)}")
        lock_error = ""
        if lock_before is not False:
            out = await self._sh(ho.LOCK_ENABLE, check=False, max_bytes=4096)
            if out.exit_code not in (0, None):
                lock_error = f"`{ho.LOCK_ENABLE}` failed: {_snippet(out.stderr or out.stdout)}"
        # Read everything back: what goes into the certificate is what the phone says now.
        items: list[HandoffItem] = []
        for setting in settings:
            after, read_error = await self._read_setting(setting.get)
            items.append(ho.setting_item(setting, before[setting][0], after,
                                         errors.get(setting) or read_error))
        lock_after, read_error = await self._lock_disabled()
        items.append(ho.lock_screen_item(lock_before, lock_after, lock_error or read_error))
        setup, _ = await self._read_setting(ho.SETUP_COMPLETE_GET)
        items.append(ho.setup_item(setup))
        harness = decode_text((await self._sh(ho.TEST_HARNESS_GET)).stdout,
                              ho.TEST_HARNESS_GET).strip()[:16]
        items.append(ho.test_harness_item(harness))
        if plan.method_id == erase.METHOD_TESTHARNESS:
            items.append(ho.AUTO_SYNC_ITEM)
        items.append(ho.BENCH_KEY_ITEM)
        self._adb_before, _ = await self._read_setting(ho.ADB_ENABLED_GET)
        return items

    async def finish_hand_off(self) -> HandoffItem | None:
        """USB debugging off, last. adbd stops with the command, so its answer may be
        lost; what counts is that the phone no longer answers this bench afterwards."""
        before = self._adb_before
        try:
            await self._sh(ho.ADB_DISABLE, check=False, max_bytes=4096)
        except (DeviceGone, DeviceTimeout) as exc:
            log.info("%s no answer to %r (%s): adbd stopping", self._tag(), ho.ADB_DISABLE,
                     type(exc).__name__)
        await self.close()
        answers = await self.reachable_with_bench_key(HANDOFF_PROBE_S)
        detail = ("USB debugging is off: the phone no longer answers ADB" if not answers
                  else "the phone still answers ADB with this bench's key")
        return ho.adb_off_item(before, answers, detail)

    async def reachable_with_bench_key(self, within_s: float) -> bool:
        """Try to reach adbd with this bench's key until two attempts in a row find nobody
        (False) or one gets in, or is asked to tap Allow (True: ADB is on), within
        `within_s` bench seconds (False when the time runs out without an answer)."""
        deadline = self.clock.monotonic() + within_s
        misses = 0
        while self.clock.monotonic() < deadline:
            try:
                conn = await connect_adb(
                    self.endpoint, self.key, self.clock,
                    connect_timeout_s=min(self.settings.connect_timeout_s, 5.0),
                    auth_timeout_s=1.0)
            except NotAuthorised:
                return True  # adbd answers; a prompt waits on the phone's screen
            except (DeviceGone, DeviceTimeout, ProtocolError):
                misses += 1
                if misses >= 2:
                    return False
            else:
                await conn.close()
                return True
            await self.clock.sleep(min(self.settings.poll_interval_s,
                                       max(0.0, deadline - self.clock.monotonic())))
        return False

    async def wait_until_gone(self, timeout_s: float) -> bool:
        """Poll the open connection until the phone drops it (a reset reboots it)."""
        deadline = self.clock.monotonic() + timeout_s
        conn = self._conn
        if conn is None or conn.closed:
            try:
                conn = await self._connection()
            except (DeviceGone, DeviceTimeout, NotAuthorised, ProtocolError):
                return True
        while self.clock.monotonic() < deadline:
            try:
                await conn.shell(cmd.ALIVE, timeout_s=self.settings.command_timeout_s,
                                 max_output_bytes=4096)
            except (DeviceGone, DeviceTimeout, ProtocolError):
                await self.close()
                return True
            await self.clock.sleep(self.settings.poll_interval_s)
        return False

    async def _rebooted(self, canary: Canary) -> CheckResult:
        marks = canary.settings
        before_uptime = _float_mark(marks.get(MARK_UPTIME))
        elapsed: float | None = None
        at = marks.get(MARK_AT)
        if at:
            try:
                # Wall-clock time (survives an agent restart), in bench seconds.
                elapsed = ((self.clock.now() - datetime.fromisoformat(at)).total_seconds()
                           * self.clock.speed)
            except ValueError:
                elapsed = None
        try:
            after_id: str | None = parse_boot_id(
                (await self._sh(cmd.BOOT_ID, max_bytes=4096)).stdout)
            after_uptime: float | None = parse_uptime(
                (await self._sh(cmd.UPTIME, max_bytes=4096)).stdout)
        except (CommandFailed, BadDeviceData) as exc:
            log.warning("%s boot id / uptime unreadable after the erase: %s", self._tag(), exc)
            after_id, after_uptime = None, None
        return verify.rebooted(marks.get(MARK_BOOT_ID), before_uptime, elapsed,
                               after_id, after_uptime)

    async def _storage_freed(self, canary: Canary) -> CheckResult:
        marks = canary.settings
        before = _int_mark(marks.get(MARK_DATA_USED))
        apps = _int_mark(marks.get(MARK_APPS))
        try:
            after: int | None = parse_df((await self._sh(cmd.DF_DATA)).stdout).used_bytes
        except (CommandFailed, BadDeviceData) as exc:
            log.warning("%s used space unknown after the erase: %s", self._tag(), exc)
            after = None
        return verify.storage_freed(before, after, in_use=bool(apps))

    async def show_yourself(self) -> bool:
        """"Identify" on the bench page: wake the screen (`input keyevent KEYCODE_WAKEUP`,
        AOSP's `input` tool) so the technician sees which phone it is. Uses (or reopens)
        this session's authorised connection; commands on it run one at a time, so this
        never interleaves with the session's own. False when the phone did not take it."""
        result = await self._sh(cmd.WAKE_SCREEN, check=False)
        log.info("%s identify: wake screen -> exit %s", self._tag(), result.exit_code)
        return result.exit_code in (0, None)

    async def close(self) -> None:
        """Release the connection. Never raises."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


def _int_mark(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and len(value) < 20 else None


def _float_mark(value: str | None) -> float | None:
    try:
        return float(value) if value is not None and len(value) < 20 else None
    except ValueError:
        return None
