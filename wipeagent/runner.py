"""`wipeagent run`: the agent as a systemd service (Type=notify).

- Start: the configuration is validated first; a bad one is refused with file:line:
  reason and exit status 78 (EX_CONFIG, shown by systemd as `status=78/CONFIG`; the unit
  does not restart on it). READY=1 is sent once the journal is open, the extensions
  (control API, uplink) are up and the agent consumes its phone sources.
- STATUS=: a one-line bench summary, refreshed on every session event.
- WATCHDOG=1: every half $WATCHDOG_USEC (through the Clock), only while the event loop
  runs, the journal answers and the agent task is alive. A hung journal or loop stops the
  pings and systemd restarts the service; sessions resume from the journal.
- SIGTERM / SIGINT: STOPPING=1, in-flight sessions are cancelled (paused), a `paused` step
  is journaled for each, and the process exits 0. Their phones resume where they stopped
  when the agent starts again and sees them (DeviceSession._adopt_unfinished).
- SIGHUP: the configuration file is read again; see wipeagent.service.reload for what
  changes live. A bad file is refused with file:line: reason and the running
  configuration stays.

Exit status: 0 stopped by a signal (or --once finished); 1 the agent failed (a phone
source died, the journal could not be opened): systemd restarts it; 75 another agent holds
the state directory (EX_TEMPFAIL: systemd retries until it is free); 78 the configuration
or the start-up was refused for something a person fixes (a bad value, an unwritable or
full state directory, a missing or loose key file, a development CA without
`allow_development_pki`): one line with the path and a hint, no restart.

One agent per state directory: `service.statelock` holds an exclusive flock on
`<state_dir>/agent.lock` from before the journal opens until the process ends.

Extensions (the control API, the uplink, metrics) plug in beside the Agent: an
`Extension` is `ctx -> async context manager`, entered after the Agent is built and
before it runs, exited after it stops. Inside, an extension may add session observers
(`ctx.observers`), provide the erase gate factory (`ctx.gate_factory`), register reload
hooks (`ctx.reload_hooks`) and start servers or background tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wipeagent.assemble import build_agent
from wipeagent.certify import StoreCertifier
from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, load_config
from wipeagent.daemon import Agent
from wipeagent.errors import (
    ConfigError,
    JournalRefused,
    StartupRefused,
    StateDirBusy,
    StoreError,
    WipeAgentError,
)
from wipeagent.models import HandoffPolicy
from wipeagent.platforms.base import ErasePolicy
from wipeagent.service.gctune import tune_gc
from wipeagent.service.limits import raise_open_files
from wipeagent.service.logs import EventLogger, setup_logging
from wipeagent.service.notify import Notifier, watchdog_interval
from wipeagent.service.preflight import (
    check_development_pki,
    os_error,
    prepare_state_dir,
    store_error,
    uses_development_pki,
)
from wipeagent.service.reload import plan_reload
from wipeagent.service.statelock import StateDirLock
from wipeagent.service.status import BenchSummary
from wipeagent.session import (
    NOT_CONFIRMED,
    EraseGate,
    GateRequest,
    GateVerdict,
    Observer,
    SessionEvent,
    allow_all,
)
from wipeagent.steps import TERMINAL_STATES, JournalStep
from wipeagent.store import Store
from wipeagent.uplink.alerts import DeliveryStatus, outbox_status

log = logging.getLogger("wipeagent.runner")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BUSY = 75  # sysexits EX_TEMPFAIL: another agent runs on this state directory
EXIT_CONFIG = 78  # sysexits EX_CONFIG; the unit's RestartPreventExitStatus

GateFactory = Callable[[AgentConfig], EraseGate]
ReloadHook = Callable[[AgentConfig], None]


async def deny_all(_request: GateRequest) -> GateVerdict:
    """The gate before the real one is known: nothing is erased by accident."""
    return NOT_CONFIRMED


@dataclass
class RunContext:
    """What extensions see of the running agent."""

    config: AgentConfig
    config_path: Path | None
    clock: Clock
    agent: Agent
    store: Store
    certifier: StoreCertifier
    notifier: Notifier
    summary: BenchSummary
    observers: list[Observer] = field(default_factory=list)
    reload_hooks: list[ReloadHook] = field(default_factory=list)
    # Set by the control extension: config -> EraseGate for policy confirm / intake.
    gate_factory: GateFactory | None = None
    # Prometheus text for the control API's GET /metrics (set by a metrics extension).
    metrics: Callable[[], str] | None = None
    # Where the uplink records each delivery attempt (the metrics extension's Metrics).
    upload_recorder: Any = None
    # The outbox and its alerts (set by the uplink extension; read by metrics and status).
    delivery: Callable[[], Awaitable[DeliveryStatus]] | None = None
    # The bench page's address, once the control extension serves it.
    page_url: str | None = None

    def serial_of(self, event: SessionEvent) -> str | None:
        """The serial of the phone in `event.slot`, once it is identified."""
        phone = self.agent.phone_on(event.slot)
        return phone.serial if phone is not None else None


Extension = Callable[[RunContext], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def control_extension(ctx: RunContext) -> AsyncIterator[None]:
    """The technician control API (wipeagent.control): bench state, the erase gates of
    policy confirm / intake / auto, the unix-socket server. Imported lazily: an
    installation without it runs only policy.erase = "auto" (gate_for refuses the rest)."""
    try:
        from wipeagent.control.bench import BenchState
        from wipeagent.control.desk import BenchTechnician
        from wipeagent.control.gates import make_gate
        from wipeagent.control.intake import IntakeList
        from wipeagent.control.server import ControlServer
    except ImportError as exc:
        log.info("control API not available (%s); policy.erase must be \"auto\"", exc)
        yield
        return
    bench = BenchState(ctx.clock, station_id=ctx.config.station.id,
                       policy=ctx.config.policy.erase,
                       idle_signout_s=ctx.config.control.idle_signout_s)
    bench.development_pki = ctx.certifier.development
    bench.attach(ctx.agent)
    ctx.observers.append(bench.observe)
    ctx.gate_factory = lambda config: make_gate(config, bench, ctx.store, ctx.clock)
    technician = BenchTechnician(
        bench, IntakeList(ctx.store), ctx.clock,
        imei_timeout_s=ctx.config.control.imei_timeout_s,
        final_reset_timeout_s=ctx.config.control.final_reset_timeout_s)
    ctx.agent.technician = technician

    def on_reload(config: AgentConfig) -> None:
        bench.policy = config.policy.erase

    ctx.reload_hooks.append(on_reload)
    server = ControlServer(bench, ctx.store, ctx.config, metrics=ctx.metrics,
                           delivery=ctx.delivery, technician=technician)
    await server.start()
    page = None
    try:
        if ctx.config.page.listen:
            from wipeagent.control.page import BenchPage

            page = BenchPage(server, ctx.config)
            try:
                await page.start()
                ctx.page_url = page.url
            except ConfigError as exc:
                # The bench keeps working without its screen (the CLI still has every
                # action); the address is fixed in the configuration or the port freed.
                log.error("bench page not served: %s (hint: %s)", exc, exc.hint)
                page = None
        yield
    finally:
        if page is not None:
            await page.close()
        await server.close()


@asynccontextmanager
async def uplink_extension(ctx: RunContext) -> AsyncIterator[None]:
    """Delivery of certificates to the platform (wipeagent.uplink), when uplink.url is
    set: a task for the life of the agent, woken by every finished session."""
    try:
        from wipeagent.uplink.client import uplink_from_config
    except ImportError as exc:
        log.info("uplink not available (%s); certificates stay in the journal", exc)
        yield
        return
    uplink = uplink_from_config(ctx.config, ctx.store, ctx.clock,
                                development=ctx.certifier.development,
                                recorder=ctx.upload_recorder)
    alert_after = ctx.config.uplink.alert_after_failures
    if uplink is None:
        log.info("uplink.url is empty: certificates stay in the journal's outbox")
        ctx.delivery = lambda: outbox_status(ctx.store, alert_after_failures=alert_after)
        yield
        return
    ctx.delivery = uplink.status
    await _log_alerts(uplink)
    ctx.observers.append(uplink.observe)
    task = asyncio.get_running_loop().create_task(uplink.run(), name="uplink")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _log_alerts(uplink: Any) -> None:
    """At start-up, say in the log what the outbox holds that needs a person."""
    try:
        status = await uplink.status()
    except WipeAgentError as exc:
        log.error("outbox unreadable: %s", exc)
        return
    for alert in status.alerts:
        level = logging.ERROR if alert.level == "error" else logging.WARNING
        log.log(level, "delivery: %s (%s)", alert.message, alert.hint)


METRICS_REFRESH_S = 15.0


@asynccontextmanager
async def metrics_extension(ctx: RunContext) -> AsyncIterator[None]:
    """Prometheus metrics (wipeagent.metrics): session events, step durations, outcomes,
    uploads, and the outbox depth refreshed from the journal every METRICS_REFRESH_S."""
    from wipeagent.metrics import Metrics

    metrics = Metrics(ctx.clock, ctx.store)
    ctx.observers.append(metrics.observe)
    ctx.metrics = metrics.render
    ctx.upload_recorder = metrics

    async def refresh() -> None:
        while True:
            try:
                await metrics.refresh(await ctx.delivery() if ctx.delivery else None)
            except WipeAgentError as exc:  # a full disk must not stop the agent
                log.warning("metrics refresh failed: %s", exc)
            await ctx.clock.sleep(METRICS_REFRESH_S)

    task = asyncio.get_running_loop().create_task(refresh(), name="metrics")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# Order matters: metrics first (the uplink records into it), then the uplink, then the
# control API (its /metrics serves what the others add).
DEFAULT_EXTENSIONS: tuple[Extension, ...] = (
    metrics_extension, uplink_extension, control_extension,
)


def gate_for(config: AgentConfig, ctx: RunContext) -> EraseGate:
    """The erase gate `config.policy.erase` asks for, or ConfigError when the control
    API that confirm / intake need is not there."""
    if ctx.gate_factory is not None:
        return ctx.gate_factory(config)
    if config.policy.erase == "auto":
        return allow_all
    # Refuse rather than erase phones nobody confirmed.
    raise ConfigError(
        f"policy.erase = {config.policy.erase!r} needs the technician control API, which "
        "is not available in this installation; set policy.erase = \"auto\" on benches "
        "whose intake happens elsewhere"
    )


async def _handed_off_slots(store: Store) -> int:
    """How many slots' latest session finished with a hand-off (for `run --once`)."""
    latest = {row.slot: row for row in await store.sessions()}
    count = 0
    for row in latest.values():
        if row.state in TERMINAL_STATES and any(
                step.step == JournalStep.HANDOFF for step in await store.steps(row.id)):
            count += 1
    return count


def _check_sources(config: AgentConfig) -> None:
    if not (config.android.endpoints or config.usb.enabled or config.ios.enabled):
        raise ConfigError("no phones to watch: android.endpoints is empty and usb and ios "
                          "are disabled")


def _apply_settings(agent: Agent, config: AgentConfig) -> None:
    """Settings sessions pick up when they start (policy, destination, operator)."""
    p = config.policy
    agent.settings = dataclasses.replace(
        agent.settings,
        policy=ErasePolicy(refuse_with_accounts=p.refuse_with_accounts,
                           allow_manual_reset=p.allow_manual_reset,
                           refuse_rooted=p.refuse_rooted),
        destination=p.destination,
        operator=config.station.operator or os.environ.get("WIPEAGENT_OPERATOR"),
        handoff=HandoffPolicy(p.handoff),
    )


class Service:
    """One run of the agent: signals, notifications, watchdog, reload, shutdown."""

    def __init__(self, config: AgentConfig, clock: Clock, *, config_path: Path | None,
                 once: bool, extensions: Sequence[Extension], notifier: Notifier) -> None:
        self.config = config
        self.clock = clock
        self.config_path = config_path
        self.once = once
        self.extensions = extensions
        self.notifier = notifier
        self.summary = BenchSummary(policy=config.policy.erase)
        self.ctx: RunContext | None = None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_status = ""

    # -- observers and status ------------------------------------------------------------

    def _observe(self, event: SessionEvent) -> None:
        ctx = self.ctx
        for observer in ctx.observers if ctx is not None else ():
            try:
                observer(event)
            except Exception:  # one broken observer must not silence the others
                log.exception("session observer %r failed", observer)
        self.refresh_status()

    def refresh_status(self) -> None:
        """Send STATUS= when the summary line changed."""
        line = self.summary.line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)

    # -- signals -------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop the agent (SIGTERM / SIGINT)."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def request_reload(self) -> None:
        """Reload the configuration (SIGHUP); reloads run one at a time."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Read the configuration file again and apply what can change live."""
        ctx = self.ctx
        if ctx is None or self.config_path is None:
            log.warning("reload ignored: no configuration file to read")
            return False
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
                plan = plan_reload(ctx.config, new)
                gate = gate_for(plan.effective, ctx)
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                self.summary.note = "last reload refused (see log)"
                self.notifier.ready()
                self.refresh_status()
                return False
            ctx.config = plan.effective
            _apply_settings(ctx.agent, plan.effective)
            ctx.agent.gate = gate
            for hook in ctx.reload_hooks:
                try:
                    hook(plan.effective)
                except Exception:
                    log.exception("reload hook %r failed", hook)
            self.summary.policy = plan.effective.policy.erase
            self.summary.note = ("restart to apply: " + ", ".join(plan.restart_needed)
                                 if plan.restart_needed else "")
            log.info("configuration reloaded from %s: changed live: %s; new sessions "
                        "use them", self.config_path, ", ".join(plan.live) or "nothing")
            if plan.restart_needed:
                log.warning("changed but only applied at the next restart: %s",
                            ", ".join(plan.restart_needed))
            self.notifier.ready()
            self.refresh_status()
            return True

    # -- watchdog ------------------------------------------------------------------------

    async def _healthy(self, agent_task: asyncio.Task[Any]) -> bool:
        ctx = self.ctx
        if ctx is None or agent_task.done():
            return False
        await ctx.store.run(lambda db: db.execute("SELECT 1").fetchone())
        return True

    async def watchdog(self, interval_real_s: float, agent_task: asyncio.Task[Any]) -> None:
        """Ping the watchdog every `interval_real_s` while the agent is healthy."""
        bench_interval = interval_real_s * self.clock.speed
        while True:
            try:
                healthy = await self.clock.wait_for(self._healthy(agent_task),
                                                    bench_interval / 2)
            except TimeoutError:
                healthy = False
                log.error("the journal did not answer in %.1f s: not pinging the watchdog",
                          interval_real_s / 2)
            if healthy:
                self.notifier.watchdog()
            await self.clock.sleep(bench_interval)

    # -- the run -------------------------------------------------------------------------

    async def _journal_paused(self, store: Store, in_flight: list[tuple[str, str]]) -> None:
        for session_id, slot in in_flight:
            try:
                row = await store.session(session_id)
                if row is None or row.state in TERMINAL_STATES:
                    continue
                await store.journal(session_id, JournalStep.PAUSED,
                                    {"reason": self._stop_reason, "at_step": row.state},
                                    state=row.state)
                log.warning("[%s] session %s paused at step %s; it resumes when the agent "
                            "runs again and sees the phone", slot, session_id[:8], row.state)
            except WipeAgentError as exc:
                log.error("[%s] could not journal the pause of %s: %s", slot, session_id, exc)

    async def run(self) -> int:
        """Run until a signal (or, with `once`, every endpoint had a session)."""
        config = self.config
        _check_sources(config)
        raise_open_files()  # a bench of hundreds of phones needs more than 1024
        if uses_development_pki(config) and not config.certificates.allow_development_pki:
            # Refused before anything is created in the state directory.
            check_development_pki(config, True)
        prepare_state_dir(config.state_path)
        with StateDirLock(config.state_path):
            return await self._run_locked(config)

    async def _build(self, config: AgentConfig) -> tuple[Agent, Store, StoreCertifier]:
        """build_agent, with start-up failures a person can fix as ConfigErrors."""
        try:
            built = await build_agent(config, clock=self.clock, gate=deny_all,
                                      observer=self._observe, usb=True, ios=True)
        except OSError as exc:
            raise os_error(exc, "cannot use") from exc
        except StoreError as exc:
            fixable = store_error(exc, config.state_path / "journal.sqlite3")
            if fixable is None:
                raise
            raise fixable from exc
        try:
            check_development_pki(config, built[2].development)
        except ConfigError:
            await built[1].close()
            raise
        self.summary.development = built[2].development
        return built

    async def _run_locked(self, config: AgentConfig) -> int:
        agent, store, certifier = await self._build(config)
        ctx = RunContext(config, self.config_path, self.clock, agent, store, certifier,
                         self.notifier, self.summary)
        ctx.observers += [EventLogger(serial_of=ctx.serial_of), self.summary]
        self.ctx = ctx
        loop = asyncio.get_running_loop()
        signals = {signal.SIGTERM: lambda: self.request_stop("SIGTERM"),
                   signal.SIGINT: lambda: self.request_stop("SIGINT"),
                   signal.SIGHUP: self.request_reload}
        async with AsyncExitStack() as stack:
            stack.push_async_callback(store.close)
            for extension in self.extensions:
                await stack.enter_async_context(extension(ctx))
            agent.gate = gate_for(config, ctx)
            for sig, handler in signals.items():
                loop.add_signal_handler(sig, handler)
                stack.callback(loop.remove_signal_handler, sig)
            n = len(config.android.endpoints)
            # A phone handed off before this start has USB debugging off: it will not
            # answer, so its endpoint will not have a session (and needs none).
            done = await _handed_off_slots(store) if self.once else 0
            until: Callable[[Agent], bool] | None = (
                (lambda a: a.completed + done >= n) if self.once else None)
            agent_task = loop.create_task(agent.run(until=until), name="agent")
            interval = watchdog_interval()
            if interval is not None:
                self._tasks.add(loop.create_task(self.watchdog(interval, agent_task),
                                                 name="watchdog"))
            log.info("started: station %s, policy %s, state %s, %d endpoint(s)%s%s",
                     config.station.id, config.policy.erase, config.state_dir, n,
                     f", watchdog every {interval:.1f} s" if interval else "",
                     ", DEVELOPMENT PKI" if certifier.development else "")
            self._last_status = self.summary.line()
            # Start-up is over: what it made lives as long as the process.
            tune_gc()
            self.notifier.ready(status=self._last_status)
            stopper = loop.create_task(self._stop.wait())
            try:
                await asyncio.wait([agent_task, stopper], return_when=asyncio.FIRST_COMPLETED)
                if agent_task.done():
                    agent_task.result()  # a failed source ends the run loudly (exit 1)
                    return EXIT_OK
                self.notifier.stopping(status=f"stopping ({self._stop_reason})")
                in_flight = [(p.session_id, p.slot) for p in agent.phones()]
                log.warning("stopping (%s): pausing %d session(s) in flight",
                            self._stop_reason, len(in_flight))
                agent_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await agent_task
                await self._journal_paused(store, in_flight)
                return EXIT_OK
            finally:
                stopper.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, stopper, return_exceptions=True)
                if not agent_task.done():
                    agent_task.cancel()
                    await asyncio.gather(agent_task, return_exceptions=True)


async def run_agent(config: AgentConfig, clock: Clock, *, once: bool = False,
                    config_path: Path | None = None,
                    extensions: Sequence[Extension] = DEFAULT_EXTENSIONS,
                    notifier: Notifier | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the exit status. Raises ConfigError
    for a configuration it refuses."""
    notifier = notifier or Notifier()
    try:
        return await Service(config, clock, config_path=config_path, once=once,
                             extensions=extensions, notifier=notifier).run()
    finally:
        notifier.close()


def cmd_run(args: argparse.Namespace) -> int:
    """`wipeagent run`: the handler (returns the process exit status)."""
    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                  args.log_format)
    path = Path(args.config)
    notifier = Notifier()
    try:
        config = load_config(path)
        return asyncio.run(run_agent(config, Clock(config.clock_speed), once=args.once,
                                     config_path=path, notifier=notifier))
    except StateDirBusy as exc:
        log.error("not started: %s (hint: %s)", exc, exc.hint)
        notifier.status(f"not started: {exc}")
        return EXIT_BUSY
    except (StartupRefused, JournalRefused) as exc:
        log.error("not started: %s (hint: %s)", exc, exc.hint)
        notifier.status(f"not started: {exc}")
        return EXIT_CONFIG
    except ConfigError as exc:
        log.error("configuration refused: %s (hint: %s)", exc, exc.hint)
        notifier.status(f"configuration refused: {exc}")
        return EXIT_CONFIG
    except WipeAgentError as exc:
        log.error("agent failed: %s (hint: %s)", exc, exc.hint)
        return EXIT_FAILURE
    except Exception:
        log.exception("agent failed")
        return EXIT_FAILURE
    finally:
        notifier.close()


def register(subparsers: Any) -> None:
    """Add `run` to the `wipeagent` command."""
    p = subparsers.add_parser("run", help="run the bench agent (systemd Type=notify service)")
    p.add_argument("--config", default="/etc/wipeagent/agent.toml")
    p.add_argument("--once", action="store_true",
                   help="one session per configured endpoint, then exit")
    p.add_argument("--log-format", choices=["auto", "journal", "console"], default="auto",
                   help="auto: journal format when stderr goes to journald")
    p.set_defaults(func=cmd_run)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m wipeagent.runner run ...` (the same as `wipeagent run ...`)."""
    parser = argparse.ArgumentParser(prog="wipeagent")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
