"""Building a running agent from its configuration (shared by `run` and `demo`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wipeagent import TOOL_NAME, __version__
from wipeagent.certify import StoreCertifier
from wipeagent.certs.pki import ensure_dev_pki, is_development, station_id_of
from wipeagent.certs.signer import Signer, load_station_signer
from wipeagent.chainhead import check_journal
from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.daemon import Agent, AgentSettings
from wipeagent.errors import ConfigError
from wipeagent.models import HandoffPolicy, StationInfo
from wipeagent.platforms.android.driver import AndroidDriver, AndroidDriverSettings
from wipeagent.platforms.base import ErasePolicy
from wipeagent.session import EraseGate, Observer, allow_all
from wipeagent.sources import DeviceSource
from wipeagent.sources.tcp import Endpoint, TcpEndpointSource
from wipeagent.store import Store
from wipeagent.transports.adb import AdbEndpoint, AdbHostKey


@dataclass
class Paths:
    """Where the agent keeps its state, all below one directory."""

    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal.sqlite3"

    @property
    def certificates(self) -> Path:
        return self.root / "certificates"

    @property
    def adb_key(self) -> Path:
        return self.root / "keys" / "adbkey"

    @property
    def dev_pki(self) -> Path:
        return self.root / "dev-pki"


def load_signer(config: AgentConfig, paths: Paths) -> tuple[Signer, bool]:
    """The station signer and whether it is a development one."""
    cc = config.certificates
    if cc.key or cc.chain:
        if not (cc.key and cc.chain):
            raise ConfigError("certificates.key and certificates.chain go together")
        signer = load_station_signer(Path(cc.key), Path(cc.chain))
        # Verifiers bind a certificate's station id to its signer's certificate (CN).
        named = station_id_of(signer.chain[0])
        if named != config.station.id:
            raise ConfigError(
                f"station.id is {config.station.id!r} but the station certificate "
                f"{cc.chain} is issued to {named!r}",
                hint="set station.id to the certificate's CN, or get a certificate for "
                     "this station id (pki new-station / sign-station)",
            )
        # A chain made by `pki init-ca --development` is development whatever the config
        # says (the signer would refuse to issue it as production anyway).
        return signer, cc.development or any(is_development(c) for c in signer.chain)
    return ensure_dev_pki(paths.dev_pki, station_id=config.station.id), True


def android_settings(config: AgentConfig) -> AndroidDriverSettings:
    a = config.android
    return AndroidDriverSettings(
        connect_timeout_s=a.connect_timeout_s,
        auth_timeout_s=a.auth_timeout_s,
        command_timeout_s=a.command_timeout_s,
        max_output_bytes=a.max_output_bytes,
        reboot_timeout_s=a.reboot_timeout_s,
        manual_reset_timeout_s=a.manual_reset_timeout_s,
        poll_interval_s=a.poll_interval_s,
        probe_interval_s=a.probe_interval_s,
    )


def android_tcp_endpoint(
    address: str,
    key: AdbHostKey,
    clock: Clock,
    settings: AndroidDriverSettings,
    slot: str | None = None,
) -> Endpoint:
    endpoint = AdbEndpoint.parse(address)
    return Endpoint(
        slot=slot or f"tcp:{endpoint.host}:{endpoint.port}",
        make_driver=lambda: AndroidDriver(endpoint, key, clock, settings),
        address=(endpoint.host, endpoint.port),
    )


async def build_agent(
    config: AgentConfig,
    *,
    clock: Clock,
    gate: EraseGate = allow_all,
    observer: Observer | None = None,
    extra_endpoints: list[str] | None = None,
    extra_sources: list[DeviceSource] | None = None,
    usb: bool = False,
    ios: bool = False,
) -> tuple[Agent, Store, StoreCertifier]:
    """Open the journal, load keys and make the Agent. The caller closes the store.

    `usb` watches this machine's real USB ports and `ios` the system's usbmuxd (each as
    config.usb / config.ios permit). Both are off unless asked for (the service asks), so
    the demo and the tests can never reach a phone plugged into a developer's machine."""
    paths = Paths(config.state_path)
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o750)
    signer, development = load_signer(config, paths)
    key = AdbHostKey.load_or_create(paths.adb_key)
    store = await Store(paths.journal).open()
    certifier = StoreCertifier(
        store, signer, out_dir=paths.certificates, development=development,
        verification_url=config.certificates.verification_url,
    )
    try:
        # The journal against the chain-head record and the exported certificates: a
        # lost journal is rebuilt, one that went backwards or is damaged is refused.
        await check_journal(store, certifier.record, paths.certificates, [signer.chain[-1]])
    except BaseException:
        await store.close()
        raise
    settings = android_settings(config)
    endpoints = [
        android_tcp_endpoint(a, key, clock, settings)
        for a in (*config.android.endpoints, *(extra_endpoints or []))
    ]
    tcp = TcpEndpointSource(endpoints, clock, config.android.poll_interval_s,
                            connect_timeout_s=config.android.connect_timeout_s,
                            probe_interval_s=config.android.probe_interval_s,
                            departure_probes=config.android.departure_probes)
    sources: list[DeviceSource] = [tcp, *(extra_sources or [])]
    if usb and config.usb.enabled:
        from wipeagent.sources.usb import make_usb_source

        sources.append(make_usb_source(config, clock, key, settings))
    if ios and config.ios.enabled:
        from wipeagent.sources.usbmux import make_usbmux_source

        sources.append(make_usbmux_source(config, clock, paths.root))
    p = config.policy
    agent = Agent(
        sources=sources,
        store=store,
        certifier=certifier,
        settings=AgentSettings(
            station=StationInfo(
                station_id=config.station.id,
                site=config.station.site,
                organisation=config.station.organisation,
                tool_name=TOOL_NAME,
                tool_version=__version__,
            ),
            policy=ErasePolicy(
                refuse_with_accounts=p.refuse_with_accounts,
                allow_manual_reset=p.allow_manual_reset,
                refuse_rooted=p.refuse_rooted,
            ),
            destination=p.destination,
            operator=config.station.operator or os.environ.get("WIPEAGENT_OPERATOR"),
            handoff=HandoffPolicy(p.handoff),
        ),
        clock=clock,
        gate=gate,
        observer=observer,
    )
    tcp.session_driver = agent.driver_for
    by_slot = {e.slot: e for e in endpoints}
    agent.driver_for_slot = lambda slot: (by_slot[slot].make_driver() if slot in by_slot
                                          else None)
    return agent, store, certifier
