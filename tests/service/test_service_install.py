"""The unit file passes `systemd-analyze verify`; scripts/install is idempotent and
keeps an administrator's configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "scripts" / "wipeagent.service"
INSTALL = ROOT / "scripts" / "install"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_has_the_hardening_the_issue_asks_for() -> None:
    s = unit_settings()
    for key, value in {
        "Type": "notify", "User": "wipeagent", "Group": "wipeagent",
        "StateDirectory": "wipeagent", "RuntimeDirectory": "wipeagent",
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "DevicePolicy": "closed", "PrivateTmp": "yes",
        "ProtectHome": "yes", "Restart": "on-failure", "RestartPreventExitStatus": "78",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    }.items():
        assert s.get(key) == [value], (key, s.get(key))
    assert "char-usb_device rw" in s["DeviceAllow"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"][0].startswith("/opt/wipeagent/venv/bin/wipeagent run --config ")
    assert "WatchdogSec" in s and "PrivateDevices" not in s


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (Debian package: systemd)")
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    entry = ROOT / ".venv" / "bin" / "wipeagent"
    if not entry.exists():
        entry = Path(shutil.which("wipeagent") or "/bin/true")
    unit = tmp_path / "wipeagent.service"
    unit.write_text(UNIT.read_text().replace("/opt/wipeagent/venv/bin/wipeagent", str(entry)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    # Unknown keys and bad values are only warnings for systemd: any line naming our
    # unit is a failure.
    assert proc.returncode == 0, proc.stderr
    assert "wipeagent.service" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_install_into_a_prefix_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run_install("--prefix", str(root), "--skip-venv")
    assert first.returncode == 0, first.stderr
    config = root / "etc/wipeagent/agent.toml"
    unit = root / "etc/systemd/system/wipeagent.service"
    rules = root / "etc/udev/rules.d/70-wipeagent.rules"
    assert config.read_text() == (ROOT / "scripts/agent.example.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert unit.read_bytes() == UNIT.read_bytes()
    assert rules.exists() and (root / "opt/wipeagent/doc/service.md").exists()
    assert "skipped systemctl daemon-reload" in first.stdout

    config.write_text("# edited by the administrator\n")
    second = run_install("--prefix", str(root), "--skip-venv")
    assert second.returncode == 0, second.stderr
    assert config.read_text() == "# edited by the administrator\n"
    assert "kept existing" in second.stdout


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = run_install("--prefix", str(root), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not root.exists()
    assert "would run: install -m 0644 scripts/wipeagent.service" in proc.stdout
    assert "-m pip install" in proc.stdout  # the venv step is planned


def test_system_dry_run_plans_user_and_group(tmp_path: Path) -> None:
    proc = run_install("--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "useradd --system" in out or "user wipeagent exists" in out
    assert "would run: install -m 0644 scripts/wipeagent.service /etc/systemd/system/" in out
    assert "would run: scripts/install-udev-rules" in out
