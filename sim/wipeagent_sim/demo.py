"""`wipeagent demo`: a simulated bench, end to end.

Starts one simulated Android phone per demo profile (each a fake adbd on loopback speaking
the real ADB protocol) and one simulated iPhone per iOS demo profile (behind one fake
usbmuxd on loopback, speaking usbmuxd + lockdown to the real pymobiledevice3), runs the
real agent over them with the `auto` policy and a development PKI, plays the technician
where the agent asks for a manual reset (the simulated iPhone owners tap Trust by
themselves, after their profile's delay), shows live progress, prints a summary, and checks
every phone ended the way its profile says it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from wipeagent.assemble import build_agent
from wipeagent.certify import certificate_filename
from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import verify_certificate
from wipeagent.clock import Clock
from wipeagent.config import (
    AgentConfig,
    AndroidConfig,
    CertificateConfig,
    ControlConfig,
    IosConfig,
    PageConfig,
    PolicyConfig,
    StationConfig,
    UsbConfig,
)
from wipeagent.control.bench import BenchState
from wipeagent.control.intake import IntakeList, parse_entry
from wipeagent.control.operators import OperatorRegistry
from wipeagent.control.page import BenchPage
from wipeagent.control.server import ControlServer
from wipeagent.errors import ConfigError
from wipeagent.models import Booking, DeviceIdentity
from wipeagent.session import DeviceSession, SessionEvent, SessionResult
from wipeagent.sources.usbmux import make_usbmux_source
from wipeagent.steps import SessionStep
from wipeagent.store import Store
from wipeagent.technician import Attestation, EnteredImeis
from wipeagent.usb.slots import SlotMap
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.android.phone import SimAndroidPhone
from wipeagent_sim.android.profiles import list_profiles
from wipeagent_sim.ios import SimIosBench, available_profiles, load_profile
from wipeagent_sim.ios.usbmuxd import default_port

if TYPE_CHECKING:
    from wipeagent.platform_service.demo import DemoPlatform

DEFAULT_SPEED = 20.0
DEMO_STATION = "demo-bench"
DEFAULT_PAGE = "127.0.0.1:8470"
# The demo's operator, to try the bench page's actions (sign in, identify, scan ...).
DEMO_OPERATOR, DEMO_PIN = "demo", "246810"


class Expectation(Protocol):
    """What a simulated phone's profile says its session must end as."""

    @property
    def name(self) -> str: ...
    @property
    def expected_outcome(self) -> str: ...
    @property
    def expected_reason(self) -> str | None: ...
    @property
    def expected_category(self) -> str | None: ...
    @property
    def expected_checks(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class IosProfileInfo:
    """An iOS simulator profile's expectation (its [expect] section)."""

    name: str
    expected_outcome: str
    expected_reason: str | None
    expected_category: str | None
    demo: bool
    description: str = ""
    expected_checks: tuple[str, ...] = ()


def ios_profiles() -> list[IosProfileInfo]:
    """Every bundled iOS profile with what it must end as."""
    infos = []
    for name in available_profiles():
        profile = load_profile(name)
        exp = profile.expect
        infos.append(IosProfileInfo(name, exp.outcome, exp.reason or None,
                                    exp.category or None, exp.demo, profile.description,
                                    tuple(exp.checks)))
    return infos


@dataclass
class Row:
    slot: str
    profile: Expectation
    step: str = "waiting"
    message: str = ""
    outcome: str = ""


@dataclass
class DemoPhone:
    slot: str
    profile: Expectation
    phone: SimAndroidPhone | None  # None: a simulated iPhone (no manual reset)
    address: str
    platform: str = "android"


class SimulatedTechnician:
    """Does what a person at the bench does when the agent asks (wipeagent.technician):
    a guided manual reset (reset from Settings, setup, USB debugging, Allow); the IMEI of a
    phone that will not give it (scanned from the box label); the final reset of policy
    handoff = "final_reset" (reset from Settings, then confirm it). Bookings come from the
    demo's intake list. Every delay goes through the bench clock."""

    NAME = "demo-technician"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tasks: set[asyncio.Task[None]] = set()
        self.phones: dict[str, SimAndroidPhone] = {}  # slot -> the simulated phone there
        self.intake: IntakeList | None = None

    def on_manual_reset(self, phone: SimAndroidPhone) -> None:
        task = asyncio.get_running_loop().create_task(self._reset(phone))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reset(self, phone: SimAndroidPhone) -> None:
        await self.clock.sleep(20)  # reads the instructions, opens Settings
        await phone.perform_manual_factory_reset()
        await self.clock.sleep(60)  # setup wizard, offline, developer options
        phone.enable_usb_debugging()
        # Taps "Allow" once the bench asks (the agent keeps retrying the connection).
        async with self.clock.timeout(600):
            while not phone.accept_pending_authorisation():
                await self.clock.sleep(1)

    # -- wipeagent.technician.Technician ------------------------------------------------

    async def enter_imeis(self, session: DeviceSession,
                          identity: DeviceIdentity) -> EnteredImeis | None:
        phone = self.phones.get(session.slot)
        if phone is None:
            return None
        await self.clock.sleep(15)  # finds the box, scans the IMEI barcode
        return EnteredImeis(tuple(phone.label_imeis()), self.NAME, self.clock.now())

    async def booking(self, identity: DeviceIdentity) -> Booking | None:
        if self.intake is None:
            return None
        entry = await self.intake.match(identity)
        if entry is None:
            return None
        return Booking(reference=entry.reference, matched_by=entry.kind,
                       identifier=entry.identifier, source=entry.source,
                       added_by=entry.added_by)

    async def attest_final_reset(self, session: DeviceSession,
                                 identity: DeviceIdentity) -> Attestation | None:
        phone = self.phones.get(session.slot)
        if phone is None:
            return None
        await self.clock.sleep(20)  # reads the instructions, opens Settings
        await phone.perform_manual_factory_reset()
        await self.clock.sleep(5)  # sees the setup wizard's first screen, confirms
        return Attestation(self.NAME, self.clock.now())


# The demo's trade-in bookings (the platform's intake feed): phones booked in by IMEI, one
# of them the phone that will not tell its IMEI (the technician's scan matches it).
DEMO_BOOKINGS = (
    ("pixel8-clean", "TI-1001"),
    ("unencrypted", "TI-1002"),
    ("rooted", "TI-1003"),
)


async def book_demo_phones(intake: IntakeList, phones: dict[str, SimAndroidPhone]) -> None:
    """Fill the intake list with DEMO_BOOKINGS (by the IMEI on each box)."""
    entries = []
    for profile, reference in DEMO_BOOKINGS:
        phone = phones.get(profile)
        if phone is not None and phone.label_imeis():
            entries.append(parse_entry({"imei": phone.label_imeis()[0],
                                        "reference": reference},
                                       source="platform", added_by=None))
    await intake.replace_source("platform", entries)


DEMO_PORTS = 16  # simulated iPhone USB ports with a slot label in the demo configuration


def ios_slot(bench: SimIosBench, udid: str) -> str:
    """The slot the agent gives a simulated iPhone: its port's label in the demo
    configuration (sources/usbmux.py finds the port behind usbmuxd's LocationID)."""
    port = bench.usbmuxd.port(udid)
    assert port is not None
    return SlotMap(demo_config(Path()).usb.slots).label(port)


def demo_config(state_dir: Path, usbmuxd: str = "",
                verification_url: str | None = None,
                handoff: str = "restore") -> AgentConfig:
    return AgentConfig(
        state_dir=str(state_dir),
        station=StationConfig(id=DEMO_STATION, site="Demo site", organisation="Demo Org",
                              operator="demo-technician"),
        policy=PolicyConfig.model_validate({"erase": "auto", "handoff": handoff}),
        android=AndroidConfig(
            connect_timeout_s=10, auth_timeout_s=30, command_timeout_s=30,
            reboot_timeout_s=300, manual_reset_timeout_s=900, poll_interval_s=2,
        ),
        # Generous per-command time: a fast bench clock shrinks it, and a loaded CI machine
        # does TLS handshakes (simulator and client in one process) slowly.
        ios=IosConfig(usbmuxd=usbmuxd, pair_timeout_s=120, command_timeout_s=120,
                      reboot_timeout_s=600),
        # The simulated iPhones' USB ports, labelled as a bench's would be: an iPhone keeps
        # its slot across re-plugs and its erase reboot (sources/usbmux.py).
        usb=UsbConfig(slots={default_port(i): f"iPhone {i + 1}" for i in range(DEMO_PORTS)}),
        # A simulated bench signs under the auto-created development CA, on purpose; with
        # the platform service beside it, the QR codes link to its verification page.
        certificates=CertificateConfig(allow_development_pki=True,
                                       verification_url=verification_url),
    )


def _fresh_output(out: Path) -> None:
    """Each demo starts from new phones and an empty journal."""
    for sub in ("sims", "state"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _table(rows: dict[str, Row]) -> Table:
    table = Table(title="wipeagent demo bench")
    for col in ("slot", "profile", "step", "detail", "outcome"):
        table.add_column(col)
    for row in rows.values():
        # Text, not markup: phone-supplied strings must never be interpreted by the terminal.
        table.add_row(Text(row.slot), Text(row.profile.name), Text(row.step),
                      Text(row.message[:70]), Text(row.outcome))
    return table


def check_expectation(profile: Expectation, result: SessionResult | None,
                      category: str | None) -> str | None:
    """What is wrong with a phone's result against its profile, or None."""
    if result is None:
        return "no session result"
    if result.outcome.value != profile.expected_outcome:
        return f"expected {profile.expected_outcome}, got {result.outcome.value}"
    if profile.expected_reason and profile.expected_reason not in result.codes:
        return f"expected reason {profile.expected_reason}, got {', '.join(result.codes)}"
    if profile.expected_category and category != profile.expected_category:
        return f"expected category {profile.expected_category}, got {category}"
    if profile.expected_checks:
        checks = {c.id: c.status.value for c in result.record.verification} \
            if result.record is not None else {}
        passed = [c for c in profile.expected_checks if checks.get(c, "missing") == "pass"]
        missing = [c for c in profile.expected_checks if c not in checks]
        if passed or missing:
            return (f"expected {', '.join(profile.expected_checks)} not to pass; "
                    f"passed: {', '.join(passed) or '-'}, missing: {', '.join(missing) or '-'}")
    return None


@asynccontextmanager
async def bench_page(config: AgentConfig, clock: Clock, store: Store, bench: BenchState,
                     listen: str) -> AsyncIterator[BenchPage]:
    """The agent's control socket and bench page beside the demo's agent. The page's
    address falls back to a free port when `listen`'s is taken."""
    with tempfile.TemporaryDirectory(prefix="wipeagent-demo-") as run_dir:
        config = config.model_copy(update={
            "control": ControlConfig(socket=str(Path(run_dir) / "control.sock"), group=""),
            "page": PageConfig(listen=listen)})
        server = ControlServer(bench, store, config)
        await server.start()
        page = BenchPage(server, config)
        try:
            try:
                await page.start()
            except ConfigError:
                host = listen.rpartition(":")[0] or "127.0.0.1"
                page = BenchPage(server, config, listen=f"{host}:0")
                await page.start()
            yield page
        finally:
            await page.close()
            await server.close()


async def run_demo(out: Path, *, speed: float = DEFAULT_SPEED, json_out: bool = False,
                   console: Console | None = None, platform: bool = False,
                   serve: bool = False, handoff: str = "restore",
                   inspect: Callable[[SimBench], None] | None = None,
                   page: str | None = None, linger_s: float = 0.0,
                   on_page: Callable[[str], None] | None = None) -> int:
    """Run the simulated bench; with `platform`, the platform service runs beside it: the
    certificates' QR codes link to its verification page, every certificate is delivered
    to it (mutual TLS, idempotency keys), and the link of one phone is printed. With
    `serve`, the service stays up after the run until interrupted (Ctrl-C / SIGTERM).
    `inspect` is called with the simulated Android bench after the run, before the phones
    are switched off (tests look at the state the phones were left in).

    With `page` (HOST:PORT), the agent's bench page is served there while the phones run
    (its address is printed, and given to `on_page`), and for `linger_s` real seconds
    after they finished."""
    # Off a terminal (CI logs, pipes) rich would wrap at 80 columns: give it room.
    console = console or Console(width=None if Console().is_terminal else 120)
    await asyncio.to_thread(_fresh_output, out)
    async with AsyncExitStack() as stack:
        service = None
        if platform or serve:
            from wipeagent.platform_service.demo import DemoPlatform

            service = await stack.enter_async_context(
                DemoPlatform(out / "state", Clock(speed), station_id=DEMO_STATION))
        code, link = await _run_bench(out, speed=speed, json_out=json_out, console=console,
                                      platform=service, handoff=handoff, inspect=inspect,
                                      page=page, linger_s=linger_s, on_page=on_page)
        if service is not None and link is not None:
            if json_out:
                console.print_json(json.dumps({"verification_link": link}))
            else:
                console.print(Text("verification link (what the QR code on one phone's "
                                   "certificate opens):"))
                console.print(Text(link), soft_wrap=True)  # one line: a link must not wrap
        if serve and service is not None:
            await _serve_until_interrupted(console, service.verify_url, json_out)
    return code


async def _serve_until_interrupted(console: Console, url: str, json_out: bool) -> None:
    if not json_out:
        console.print(Text(f"platform service up at {url} (the page is also the auditor's "
                           "tool: drop a certificate file on it); Ctrl-C to stop"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run_bench(out: Path, *, speed: float, json_out: bool, console: Console,
                     platform: DemoPlatform | None, handoff: str = "restore",
                     inspect: Callable[[SimBench], None] | None = None,
                     page: str | None = None, linger_s: float = 0.0,
                     on_page: Callable[[str], None] | None = None
                     ) -> tuple[int, str | None]:
    """(exit code, the verification link of one phone's certificate, if delivered)."""
    clock = Clock(speed)
    profiles = [p for p in list_profiles() if p.demo]
    technician = SimulatedTechnician(clock)
    rows: dict[str, Row] = {}
    by_slot: dict[str, DemoPhone] = {}

    ios_infos = [p for p in ios_profiles() if p.demo]
    sysfs = out / "sims" / "sysfs"  # the simulated iPhones' USB devices, as sysfs shows them

    async with SimBench(profiles=[p.name for p in profiles], host="127.0.0.1", base_port=0,
                        state_dir=out / "sims", clock=clock) as bench, \
            SimIosBench([p.name for p in ios_infos], clock=clock,
                        sysfs_root=sysfs) as ios_bench:
        for info, sim in zip(profiles, bench.phones, strict=True):
            slot = f"tcp:{sim.host}:{sim.port}"
            by_slot[slot] = DemoPhone(slot, info, sim.phone, f"{sim.host}:{sim.port}")
            technician.phones[slot] = sim.phone
            rows[slot] = Row(slot, info)
        for ios_info, iphone in zip(ios_infos, ios_bench.phones, strict=True):
            slot = ios_slot(ios_bench, iphone.udid)
            by_slot[slot] = DemoPhone(slot, ios_info, None, iphone.udid, "ios")
            rows[slot] = Row(slot, ios_info)

        live: Live | None = None

        def observe(event: SessionEvent) -> None:
            row = rows.get(event.slot)
            if row is None:
                return
            row.step, row.message = event.step, event.message
            if event.outcome is not None:
                row.outcome = event.outcome.value
            phone = by_slot[event.slot].phone
            if event.step == SessionStep.MANUAL_RESET and phone is not None:
                technician.on_manual_reset(phone)
            if live is not None:
                live.update(_table(rows))
            elif not json_out:
                console.print(Text(f"[{event.slot}] {row.profile.name}: {event.step}: "
                                   f"{event.message}"))

        config = demo_config(out / "state", usbmuxd=ios_bench.address,
                             verification_url=platform.verify_url if platform else None,
                             handoff=handoff)
        screen = BenchState(clock, station_id=config.station.id, policy=config.policy.erase)

        def observe_both(event: SessionEvent) -> None:
            screen.observe(event)
            observe(event)

        agent, store, certifier = await build_agent(
            config, clock=clock, observer=observe_both,
            extra_endpoints=[p.address for p in by_slot.values() if p.platform == "android"],
            extra_sources=[make_usbmux_source(config, clock, config.state_path,
                                              sysfs=sysfs)],
        )
        technician.intake = IntakeList(store)
        await book_demo_phones(technician.intake,
                               {p.name: s.phone for p, s in zip(profiles, bench.phones,
                                                                 strict=True)})
        agent.technician = technician
        link = None
        screen.attach(agent)
        screen.development_pki = certifier.development
        stack = AsyncExitStack()
        try:
            if page:
                await asyncio.to_thread(OperatorRegistry.for_state_dir(config.state_path).add,
                                        DEMO_OPERATOR, DEMO_PIN)
                served = await stack.enter_async_context(
                    bench_page(config, clock, store, screen, page))
                if on_page is not None:
                    on_page(served.url)
                if not json_out:
                    console.print(Text(f"bench page: {served.url}  (open it in a browser; "
                                       f"sign in as {DEMO_OPERATOR}, PIN {DEMO_PIN})",
                                       style="bold"))
            if console.is_terminal and not json_out:
                with Live(_table(rows), console=console, refresh_per_second=8) as live_:
                    live = live_
                    results = await agent.run(until=lambda a: a.completed >= len(by_slot))
                live = None
            else:
                results = await agent.run(until=lambda a: a.completed >= len(by_slot))
            delivery_ok = True
            if platform is not None:
                report = await platform.deliver(store)
                delivery_ok = report.finished and report.delivered == report.total
                if not json_out:
                    console.print(Text(report.summary("the platform service")))
                held = await platform.held()
                erased = [r for r in await store.certificates()
                          if r.certificate_id in held and r.outcome == "erased"]
                if erased:
                    link = platform.link(erased[0])
            if inspect is not None:
                inspect(bench)
            if page and linger_s > 0:
                if not json_out:
                    console.print(Text(f"the bench page stays up for {linger_s:g} s "
                                       "(Ctrl-C to stop)"))
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(linger_s)
        finally:
            await stack.aclose()
            await store.close()

    code = _summarise(results, by_slot, cert_dir=certifier.out_dir, out=out,
                      json_out=json_out, console=console)
    return (code if delivery_ok else 1), link


def _summarise(results: list[SessionResult], by_slot: dict[str, DemoPhone], *,
               cert_dir: Path, out: Path, json_out: bool, console: Console) -> int:
    trust = dev_trust_root(out / "state" / "dev-pki")
    by_result = {r.slot: r for r in results}
    summary: list[dict[str, Any]] = []
    failures = 0
    table = Table(title="summary")
    for col in ("slot", "profile", "phone", "outcome", "category", "as expected"):
        table.add_column(col)
    details: list[Text] = []
    for slot, demo_phone in by_slot.items():
        result = by_result.get(slot)
        category: str | None = None
        cert_path = ""
        if result is not None and result.certificate is not None:
            path = cert_dir / certificate_filename(result.certificate)
            cert_path = str(path)
            verified = verify_certificate(path.read_bytes(), trust_roots=[trust])
            category = verified.payload["sanitization"]["category"]
        problem = check_expectation(demo_phone.profile, result, category)
        failures += problem is not None
        ident = result.identity if result else None
        phone = f"{ident.manufacturer} {ident.marketing_name or ident.model}" if ident else "?"
        table.add_row(Text(slot), Text(demo_phone.profile.name), Text(phone),
                      Text(result.outcome.value if result else "-"), Text(category or "-"),
                      Text("yes" if problem is None else f"NO: {problem}"))
        notes = [f"reason: {r}" for r in (result.reasons if result else ())]
        notes += [f"exception: {e}" for e in (result.exceptions if result else ())]
        notes.append(f"certificate: {Path(cert_path).name or 'none'}")
        details.append(Text(f"{demo_phone.profile.name}:\n" +
                            "\n".join(f"  {n}" for n in notes)))
        summary.append({
            "slot": slot, "platform": demo_phone.platform,
            "profile": demo_phone.profile.name, "phone": phone,
            "outcome": result.outcome.value if result else None, "category": category,
            "reasons": list(result.reasons) if result else [],
            "codes": list(result.codes) if result else [],
            "exceptions": list(result.exceptions) if result else [],
            "certificate": cert_path, "as_expected": problem is None, "problem": problem,
        })
    if json_out:
        console.print_json(json.dumps({"phones": summary, "ok": failures == 0}))
    else:
        console.print(table)
        for block in details:
            console.print(block)
        for platform in ("android", "ios"):
            mine = [p for p, d in zip(summary, by_slot.values(), strict=True)
                    if d.platform == platform]
            good = sum(p["as_expected"] for p in mine)
            console.print(f"{platform}: {good}/{len(mine)} phones ended as their profiles "
                          "expect")
        console.print(f"{len(summary) - failures}/{len(summary)} phones ended as their "
                      f"profiles expect; certificates in {cert_dir}")
        console.print(_test_profiles_table())
    return 0 if failures == 0 else 1


def _test_profiles_table() -> Table:
    """The profiles not on the demo bench (misbehaving and lying phones, noisy honest
    ones) and what each must end as: scripts/test runs them (tests/test_lying_phones.py,
    tests/test_bench_e2e.py, tests/test_bench_ios_e2e.py)."""
    table = Table(title="test profiles (not in the demo; scripts/test runs them)")
    for col in ("platform", "profile", "expected outcome", "reason", "checks that must fail"):
        table.add_column(col)
    infos: list[tuple[str, Expectation, bool]] = [
        *(("android", p, p.demo) for p in list_profiles()),
        *(("ios", p, p.demo) for p in ios_profiles())]
    for platform, info, demo in infos:
        if demo:
            continue
        table.add_row(Text(platform), Text(info.name), Text(info.expected_outcome),
                      Text(info.expected_reason or "-"),
                      Text(", ".join(info.expected_checks) or "-"))
    return table


