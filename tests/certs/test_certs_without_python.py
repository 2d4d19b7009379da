"""docs/verify-without-python.md: its recipe (openssl + panva/jose) is run here verbatim,
taken out of the document, against valid certificates and forgeries; the JavaScript it
quotes is the file in web-src/verify-jose."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import certs_fixtures as fx
import pytest

from wipeagent.certs import issue_certificate, pki

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "verify-without-python.md"
JOSE = ROOT / "web-src" / "verify-jose"
CORPUS = Path(__file__).parent / "corpus"


def _block(marker: str, language: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker}:begin -->\n```{language}\n(.*?)```\n<!-- {marker}:end -->",
                      text, re.S)
    assert found, f"{marker} block missing from {DOC}"
    return found.group(1)


def run_recipe(cert: Path, root: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["bash", "-c", _block("recipe", "sh")], cwd=workdir, capture_output=True, text=True,
        timeout=120, check=False,
        env={**os.environ, "CERT": str(cert), "ROOT": str(root), "JOSE": str(JOSE)})


@pytest.fixture(autouse=True, scope="module")
def _jose_installed() -> None:
    assert (JOSE / "node_modules" / "jose").is_dir(), "run scripts/setup --test (npm ci)"


def test_the_document_quotes_the_script_exactly() -> None:
    assert _block("script", "js") == (JOSE / "verify-jws.mjs").read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "root"), [
    ("valid-v2-ed25519.jws", "root.pem"),
    ("valid-v2-es256.jws", "root-p256.pem"),
    ("valid-ed25519.jws", "root.pem"),  # version 1
    ("valid-v2-intermediate.jws", "root-pathlen1.pem"),
    ("valid-v2-not-erased-ios.jws", "root.pem"),
])
def test_recipe_accepts_valid_certificates(name: str, root: str, tmp_path: Path) -> None:
    done = run_recipe(CORPUS / name, CORPUS / root, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("VALID 01a1f838-")


def test_recipe_accepts_what_the_agent_issues_today(tmp_path: Path) -> None:
    signer = pki.ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(fx.erased_record(), signer, sequence=1, previous_hash=None,
                               development=True, verification_url=None)
    cert = tmp_path / "fresh.jws"
    cert.write_bytes(issued.data)
    done = run_recipe(cert, tmp_path / "pki" / "ca" / "ca.pem", tmp_path / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"VALID {issued.certificate_id}: erased" in done.stdout


# Forgeries, and the step that must catch each (a fragment of what it prints).
FORGERIES = [
    ("wrong-ca.jws", "root.pem", "verification failed"),
    ("expired-station-cert.jws", "root.pem", "certificate has expired"),
    ("not-yet-valid-station-cert.jws", "root.pem", "certificate is not yet valid"),
    ("intermediate-under-pathlen0-root.jws", "root.pem", "path length constraint exceeded"),
    ("station-may-sign-certificates.jws", "root.pem", "verification failed"),
    ("flipped-payload-byte.jws", "root.pem", "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
    ("es256-high-s-twin.jws", "root-p256.pem", "high S"),
    ("whitespace-twin.jws", "root.pem", "not the canonical"),
    ("signature-spare-bits-twin.jws", "root.pem", "not canonical base64url"),
    ("unprotected-header.jws", "root.pem", "not the canonical"),
    ("kid-mismatch.jws", "root.pem", "kid mismatch"),
    ("alg-none.jws", "root.pem", "alg none refused"),
    ("hs256-confusion.jws", "root.pem", "alg HS256 refused"),
    ("jwk-header-injection.jws", "root.pem", "unexpected header members"),
    ("other-station-signs.jws", "root.pem", "signed by bench-02 in the name of bench-01"),
    ("lookalike-station-certificate-v1.jws", "root.pem", "INVALID: signed by"),
    ("issued-in-future.jws", "root.pem", "issued in the future"),
]


@pytest.mark.parametrize(("name", "root", "says"), FORGERIES)
def test_recipe_refuses_forgeries(name: str, root: str, says: str, tmp_path: Path) -> None:
    done = run_recipe(CORPUS / name, CORPUS / root, tmp_path)
    assert done.returncode != 0, done.stdout
    assert "VALID " not in done.stdout.replace("INVALID", "")
    assert says in done.stdout + done.stderr, done.stdout + done.stderr
