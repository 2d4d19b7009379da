"""The udev rules file and its installer."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "scripts/udev/70-wipeagent.rules"
# KEY{attr}=="value" / KEY+="value" / KEY!="value" ...; values never contain a quote.
PAIR = re.compile(r'[A-Z_]+(\{[A-Za-z0-9_]+\})?(==|!=|=|\+=|:=)"[^"]*"')


def rule_lines() -> list[str]:
    return [
        line.strip()
        for line in RULES.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_rules_are_well_formed() -> None:
    for line in rule_lines():
        pairs = [p.strip() for p in line.split(", ")]
        assert all(PAIR.fullmatch(p) for p in pairs), line
    gotos = {m for line in rule_lines() for m in re.findall(r'GOTO="([^"]+)"', line)}
    labels = {m for line in rule_lines() for m in re.findall(r'LABEL="([^"]+)"', line)}
    assert gotos == labels == {"wipeagent_end"}


def test_rules_cover_adb_fastboot_and_apple() -> None:
    text = "\n".join(rule_lines())
    for match in ('"*:ff4201:*"', '"*:ff4203:*"', 'ATTR{idVendor}=="05ac"'):
        line = next(line for line in rule_lines() if match in line)
        assert 'GROUP="wipeagent"' in line and 'MODE="0660"' in line
    assert 'IMPORT{builtin}="usb_id"' in text  # what fills ID_USB_INTERFACES


def test_installer_installs_into_a_directory(tmp_path: Path) -> None:
    dest = tmp_path / "rules.d"
    proc = subprocess.run(
        [str(ROOT / "scripts/install-udev-rules"), "--dest", str(dest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    installed = dest / "70-wipeagent.rules"
    assert installed.read_bytes() == RULES.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o644
    bad = subprocess.run(
        [str(ROOT / "scripts/install-udev-rules"), "--bogus"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert bad.returncode == 2
