"""Agent configuration: a TOML file parsed into frozen, validated records.

Every bad value is a ConfigError that names the file, the line (where it can be found) and
the reason, so an administrator can fix it without reading code.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wipeagent.errors import ConfigError

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StationConfig(_Section):
    id: str = Field(default="bench-01", pattern=_ID)
    site: str = Field(default="", max_length=200)
    organisation: str = Field(default="", max_length=200)
    operator: str | None = Field(default=None, max_length=100)


class PolicyConfig(_Section):
    # auto: erase every phone the checks allow (demo, benches whose intake is elsewhere).
    # confirm / intake come with the technician control API.
    erase: Literal["auto", "confirm", "intake"] = "confirm"
    refuse_with_accounts: bool = True
    allow_manual_reset: bool = True
    refuse_rooted: bool = False
    destination: Literal["reuse", "resale", "recycling"] = "resale"
    # After a verified erase (docs/handoff.md): "restore" puts back what the erase method
    # changed and turns USB debugging off last (verified, read back); "final_reset" has
    # the technician reset the phone once more from Settings for an out-of-box state
    # (technician-attested). iPhones: both record the state and forget this bench.
    handoff: Literal["restore", "final_reset"] = "restore"


class AndroidConfig(_Section):
    # ADB endpoints reached over TCP ("host:port"): simulators and phones on network
    # debugging. USB phones are found by the USB watcher.
    endpoints: tuple[str, ...] = ()
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    auth_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    command_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_output_bytes: int = Field(default=1 << 20, ge=4096, le=64 << 20)
    # How long a phone may take to come back after a Test Harness reset, and how long the
    # technician has for a guided manual reset (reset, setup, re-enable USB debugging).
    reboot_timeout_s: float = Field(default=600.0, gt=0, le=7200)
    manual_reset_timeout_s: float = Field(default=1800.0, gt=0, le=86400)
    # Bench seconds between presence checks of a phone that is on the bench (a finished
    # phone left plugged in, a session waiting for the technician).
    poll_interval_s: float = Field(default=2.0, gt=0, le=60)
    # Bench seconds between looks for a phone that is not there yet: an empty TCP
    # endpoint (a bare ADB CNXN, no key used) and a phone expected back from its reset.
    probe_interval_s: float = Field(default=0.5, gt=0, le=60)
    # Failed presence checks in a row (a poll interval apart) before a TCP phone counts as
    # gone: one late answer on a busy agent is not.
    departure_probes: int = Field(default=3, ge=1, le=100)


class UsbConfig(_Section):
    """USB detection (owner: wipeagent/usb, wipeagent/sources/usb.py)."""

    enabled: bool = True
    # Physical port path (sysfs name, e.g. "1-3.2") -> slot label shown to technicians.
    slots: dict[str, str] = Field(default_factory=dict)
    fold_window_s: float = Field(default=2.0, gt=0, le=60)
    # A port that never goes quiet (a flapping cable) is reported after this many seconds.
    max_fold_s: float = Field(default=10.0, gt=0, le=600)


class IosConfig(_Section):
    """iPhones through usbmuxd (owner: wipeagent/transports/ios.py, platforms/ios)."""

    enabled: bool = True
    # usbmuxd address: "host:port", a unix socket path, or empty for the system socket.
    usbmuxd: str = ""
    pair_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    command_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    reboot_timeout_s: float = Field(default=900.0, gt=0, le=7200)


class ControlConfig(_Section):
    """The technician control API (owner: wipeagent/control)."""

    socket: str = "/run/wipeagent/control.sock"
    group: str = "wipeagent"
    # Bench seconds a phone waits for a technician to confirm its erase (policy confirm).
    confirm_timeout_s: float = Field(default=3600.0, gt=0, le=86400)
    # Bench seconds a phone that would not give its IMEI waits for the technician to scan
    # or type it (then it goes on without one).
    imei_timeout_s: float = Field(default=300.0, gt=0, le=86400)
    # Bench seconds the technician has to do and confirm the final reset (handoff =
    # "final_reset"); then the hand-off is recorded as failed.
    final_reset_timeout_s: float = Field(default=1800.0, gt=0, le=86400)
    # Policy intake: bench seconds a phone that is not booked in waits for its barcode to
    # be scanned on the bench page before it is refused (0: refuse at once).
    intake_wait_s: float = Field(default=600.0, ge=0, le=86400)
    # An operator is signed out after this many bench seconds without an action.
    idle_signout_s: float = Field(default=900.0, gt=0, le=86400)


class PageConfig(_Section):
    """The bench page served by the agent (owner: wipeagent/control/page.py)."""

    # HOST:PORT to serve the page on; loopback by default (a kiosk browser on the bench
    # PC). Any other address requires a signed-in operator for everything but the
    # sign-in form. Empty: no page.
    listen: str = Field(default="127.0.0.1:8470",
                        pattern=r"^(\[?[0-9A-Za-z.:-]+\]?:[0-9]{1,5})?$")
    # Extra host names the page may be reached by (besides the listen address, localhost
    # and 127.0.0.1): requests naming any other Host are refused (DNS rebinding).
    hosts: tuple[str, ...] = ()
    # The page's language until the operator picks one ("en" or "zh-CN").
    language: Literal["en", "zh-CN"] = "en"
    # The bench's physical layout: tiles per row, and slot (label or name) -> [row, column]
    # (1-based). Slots without a position fill the free cells in slot order.
    columns: int = Field(default=12, ge=1, le=64)
    positions: dict[str, tuple[int, int]] = Field(default_factory=dict)


class UplinkConfig(_Section):
    """Delivery of certificates to the platform (owner: wipeagent/uplink)."""

    # The platform's ingest endpoint, e.g. https://platform.example/v1/certificates;
    # empty: certificates stay in the outbox (nothing is lost, nothing is sent).
    url: str = Field(default="", max_length=2000, pattern=r"^(https://\S+)?$")
    ca: str = ""  # CA bundle that signs the platform's server certificate (empty: system)
    # The bench's TLS client certificate (EKU clientAuth, CN = station id) and key, issued
    # by the organisation CA (`wipeagent uplink-key` / `uplink-sign`). Empty with a
    # development PKI: a development client certificate is made.
    client_cert: str = ""
    client_key: str = ""
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Exponential back-off with jitter between failed attempts, capped; Retry-After from
    # the platform is honoured up to max_retry_after_s.
    backoff_initial_s: float = Field(default=5.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=900.0, gt=0, le=86400)
    max_retry_after_s: float = Field(default=86400.0, gt=0, le=7 * 86400)
    # How often an idle uplink looks for certificates it was not told about.
    poll_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # A certificate that keeps failing on its own (5xx, timeouts, ...) is parked after
    # this many failures in a row, once the platform has taken another certificate since
    # it began to fail (an outage parks nothing); `wipeagent outbox requeue` sends it again.
    park_after_failures: int = Field(default=8, ge=1, le=1000)
    # Alerts in status, metrics and the log from this many failures in a row.
    alert_after_failures: int = Field(default=3, ge=1, le=1000)


class CertificateConfig(_Section):
    # Station signing key and its certificate chain (PEM, leaf first). When both are
    # empty the agent creates a development PKI in the state directory and marks every
    # certificate as development.
    key: str = ""
    chain: str = ""
    development: bool = False
    # `wipeagent run` refuses to sign under a development CA (the auto-created one, or a
    # chain marked development) unless this says so: a test or demo bench, never
    # production. With it, the log, `status` and every certificate say "development".
    allow_development_pki: bool = False
    verification_url: str | None = Field(default=None, max_length=300)
    language: Literal["en", "zh"] = "en"


class AgentConfig(_Section):
    state_dir: str = "/var/lib/wipeagent"
    clock_speed: float = Field(default=1.0, gt=0, le=1000)
    station: StationConfig = StationConfig()
    policy: PolicyConfig = PolicyConfig()
    android: AndroidConfig = AndroidConfig()
    certificates: CertificateConfig = CertificateConfig()
    usb: UsbConfig = UsbConfig()
    ios: IosConfig = IosConfig()
    control: ControlConfig = ControlConfig()
    page: PageConfig = PageConfig()
    uplink: UplinkConfig = UplinkConfig()

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line where the failing key is written."""
    keys = [str(k) for k in loc if isinstance(k, str)]
    if not keys:
        return None
    pattern = re.compile(rf"^\s*{re.escape(keys[-1])}\s*=")
    section = keys[-2] if len(keys) > 1 else None
    in_section = section is None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = section is None or stripped.strip("[]").split(".")[-1] == section
            continue
        if in_section and pattern.match(line):
            return number
    return None


def parse_config(text: str, source: str = "<config>") -> AgentConfig:
    """Parse TOML text into an AgentConfig, or raise ConfigError naming file:line: reason."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line = _line_of(text, loc)
        where = f"{source}:{line}" if line else source
        key = ".".join(str(k) for k in loc)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {key}: {first['msg']}{more}") from exc


def load_config(path: Path) -> AgentConfig:
    """Read and validate the configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    return parse_config(text, str(path))
