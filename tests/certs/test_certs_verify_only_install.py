"""Issue 14 part 3: `pip install wipeagent` (no extra) is a verify-only install.

A fresh virtualenv gets the package from this checkout with pip, dependencies from PyPI
(pip's cache makes later runs quick). It must hold neither pymobiledevice3 nor libusb (nor
any other bench dependency), take under 30 MB (du of its site-packages: what the install
put there; the venv is made without pip, which a user may or may not keep), verify
certificates (the corpus's, and one the agent's current code issues), and answer the
agent's verbs with one line naming the extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import certs_fixtures as fx
import pytest

from wipeagent.certs import issue_certificate, pki

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "certs" / "corpus"
LIMIT_MB = 30
# Distributions a verify-only install must not pull (the bench's and the platform's).
FORBIDDEN = {"pymobiledevice3", "libusb1", "pyusb", "pyudev", "adb-shell", "aiohttp",
             "pydantic", "reportlab", "sqlalchemy", "psycopg", "rich", "joserfc"}


def _copy_source(target: Path) -> Path:
    """The distribution's files (what a clean clone has), so pip builds outside our tree."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=60).stdout
    for name in listed.splitlines():
        if name.startswith(("tests/", "sim/", "web-src/", "docs/", ".")):
            continue
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("verify-only")
    source = _copy_source(base / "src")
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)],
                   check=True, timeout=120)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


def _site_packages(env_dir: Path) -> Path:
    (found,) = (env_dir / "lib").glob("python3*/site-packages")
    return found


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(env_dir / "bin" / "wipeagent"), *args], capture_output=True,
                          text=True, timeout=120, check=False, cwd=CORPUS,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_pulls_no_bench_dependency_and_stays_small(venv: Path) -> None:
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.metadata as m, json; "
         "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
        capture_output=True, text=True, check=True, timeout=60)
    installed = set(json.loads(listing.stdout))
    assert "wipeagent" in installed and "cryptography" in installed
    assert not installed & FORBIDDEN, installed & FORBIDDEN
    assert not any("usb" in name for name in installed), installed
    du = subprocess.run(["du", "-sk", str(_site_packages(venv))], capture_output=True,
                        text=True, check=True, timeout=60)
    size = int(du.stdout.split()[0]) * 1024  # bytes on disk; MB are 10**6 bytes here
    assert size < LIMIT_MB * 10**6, f"verify-only install is {size / 10**6:.1f} MB"


def test_verifies_corpus_and_fresh_certificates(venv: Path, tmp_path: Path) -> None:
    # A certificate the agent issues today (schema v2, dev PKI), verified by the small
    # install exactly as by the full one.
    signer = pki.ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(fx.erased_record(), signer, sequence=1, previous_hash=None,
                               development=True, verification_url=None)
    fresh = tmp_path / "fresh.jws"
    fresh.write_bytes(issued.data)
    dev_root = tmp_path / "pki" / "ca" / "ca.pem"
    done = _run(venv, "verify", "--json", "--trust", str(dev_root), str(fresh))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["results"][0]["certificate_id"] == issued.certificate_id

    done = _run(venv, "verify", "--trust", "root.pem", "--batch", "seq-good")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("OK ") == 4
    expected = json.loads((CORPUS / "expected.json").read_text())["files"]
    names = sorted(n for n, e in expected.items() if e["trust"] == "root.pem")
    done = _run(venv, "verify", "--json", "--trust", "root.pem", *names)
    assert done.returncode == 1  # the corpus holds forgeries
    got = {r["file"]: r.get("reason", "ok") if not r["valid"] else "ok"
           for r in json.loads(done.stdout)["results"]}
    assert got == {n: expected[n]["reason"] for n in names}


@pytest.mark.parametrize(("argv", "extra"), [
    (["status"], "bench"),
    (["run", "--config", "/nonexistent.toml"], "bench"),
    (["usb", "list"], "bench"),
    (["platform", "migrate"], "platform"),
    (["verify", "--trust", "root.pem", "valid-ed25519.jws", "--pdf", "out"], "pdf"),
])
def test_other_verbs_name_their_extra(venv: Path, argv: list[str], extra: str) -> None:
    done = _run(venv, *argv)
    assert done.returncode == 69, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert f"pip install 'wipeagent[{extra}]'" in done.stderr
    assert done.stdout == ""


def test_help_and_python_api_work(venv: Path) -> None:
    done = _run(venv, "--help")
    assert done.returncode == 0 and "verify" in done.stdout and "status" in done.stdout
    api = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from pathlib import Path; from wipeagent.certs import verify_certificate, "
         "load_trust_roots; c = verify_certificate(Path('valid-v2-es256.jws').read_bytes(), "
         "trust_roots=load_trust_roots(Path('root-p256.pem'))); print(c.outcome)"],
        capture_output=True, text=True, timeout=60, check=False, cwd=CORPUS)
    assert api.returncode == 0, api.stderr
    assert api.stdout.strip() == "erased"
