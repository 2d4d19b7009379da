"""The `wipeagent` command: which module each verb lives in, which extra it needs, and
that a verb loads only what it uses (start-up time, verify-only installs)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from wipeagent import cli

CORPUS = Path(__file__).parent / "certs" / "corpus"
# Modules of the bench and platform extras (slow to import, absent from a verify install).
HEAVY = ("aiohttp", "pydantic", "rich", "joserfc", "jsonschema", "adb_shell",
         "pymobiledevice3", "pyudev", "usb1", "reportlab", "qrcode", "sqlalchemy",
         "wipeagent.models", "wipeagent.runner")


def test_area_table_lists_exactly_what_each_module_registers() -> None:
    for area in cli.AREAS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(area.module).register(sub)
        assert tuple(sub.choices) == area.verbs, area.module


def _imported_after(code: str) -> tuple[int, list[str]]:
    """Run `code` (which sets `rc`) in a fresh interpreter; the heavy modules it loaded."""
    script = (f"import sys, json\n{code}\n"
              f"print(json.dumps([rc, sorted(m for m in {list(HEAVY)!r} if m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True, cwd=CORPUS)
    rc, loaded = json.loads(done.stdout.splitlines()[-1])
    return rc, loaded


def test_verify_and_status_load_no_bench_module() -> None:
    rc, loaded = _imported_after(
        "from wipeagent.cli import main\n"
        "rc = main(['verify', '--trust', 'root.pem', 'valid-v2-ed25519.jws'])")
    assert (rc, loaded) == (0, [])
    rc, loaded = _imported_after(
        "from wipeagent.cli import main\n"
        "rc = main(['status', '--json', '--socket', '/nonexistent/control.sock'])")
    assert rc == 2  # the agent cannot be reached: said in one line, nothing heavy loaded
    assert loaded == []


def test_version_loads_no_area() -> None:
    rc, loaded = _imported_after(
        "from wipeagent.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    rc = e.code\n"
        "assert 'wipeagent.certs.cli' not in sys.modules")
    assert (rc, loaded) == (0, [])


def test_missing_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delitem(sys.modules, "wipeagent.certs.pdf", raising=False)
    for name in [m for m in sys.modules if m.split(".")[0] == "reportlab"] + ["reportlab"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were missing
    code = cli.main(["verify", "--trust", str(CORPUS / "root.pem"),
                     str(CORPUS / "valid-ed25519.jws"), "--pdf", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_MISSING_EXTRA
    assert err == ("wipeagent verify: needs the 'pdf' extra (module reportlab is not "
                   "installed): pip install 'wipeagent[pdf]'\n")
    assert out == ""  # refused before any work


def test_unknown_verb_still_finds_other_distributions_verbs() -> None:
    parser = cli.build_parser(["demo", "--help"])
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "demo" in choices.choices and "verify" in choices.choices
    only = cli.build_parser(["verify", "x"])
    choices = next(a for a in only._actions if isinstance(a, argparse._SubParsersAction))
    assert set(choices.choices) == {"verify", "pki"}
