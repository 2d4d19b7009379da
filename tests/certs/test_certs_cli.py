"""The `verify` and `pki` sub-commands, end to end through argparse (in-process)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import certs_fixtures as fx
import pytest
from cryptography import x509

from wipeagent.certs import issue_certificate, load_station_signer
from wipeagent.certs.cli import main, register, verify_many

CORPUS = Path(__file__).parent / "corpus"
ROOT = str(CORPUS / "root.pem")


def test_register_adds_commands() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", "a.jws", "--trust", "r.pem", "--json"])
    assert args.func.__name__ == "cmd_verify" and args.files == ["a.jws"]
    assert args.handler is args.func  # the lead's cli.py dispatches on `handler`
    args = parser.parse_args(["pki", "init-ca", "--out", "d", "--organisation", "Acme"])
    assert args.key_type == "ed25519" and not args.development


def test_verify_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["verify", "--trust", ROOT, str(CORPUS / "valid-ed25519.jws")]) == 0
    assert "OK" in capsys.readouterr().out
    assert (
        main(
            [
                "verify",
                "--trust",
                ROOT,
                str(CORPUS / "valid-ed25519.jws"),
                str(CORPUS / "hs256-confusion.jws"),
            ]
        )
        == 1
    )
    assert "unsupported_alg" in capsys.readouterr().out
    assert main(["verify", "--trust", ROOT, "--batch", str(CORPUS / "seq-fork")]) == 3
    assert "fork" in capsys.readouterr().out
    assert main(["verify", "--trust", ROOT, str(tmp_path / "missing.jws")]) == 4
    assert main(["verify", str(CORPUS / "valid-ed25519.jws")]) == 2  # no trust root
    assert main(["verify", "--trust", ROOT, "--batch", str(tmp_path / "no-such-dir")]) == 4
    assert main(["verify", "--trust", str(tmp_path / "nope.pem"), "x.jws"]) == 4


def test_verify_json_and_batch(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", "--trust", ROOT, "--json", "--batch", str(CORPUS / "seq-good")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["valid"] == 4 and report["invalid"] == 0
    assert [r["sequence"] for r in report["results"]] == [1, 2, 3, 4]
    assert report["throughput"]["certificates"] == 4 and report["throughput"]["per_second"] > 0
    assert report["sequence_problems"] == []
    main(["verify", "--trust", ROOT, "--json", "--batch", str(CORPUS / "seq-gap")])
    report = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in report["sequence_problems"]] == ["gap"]


def test_batch_picks_up_agent_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, src in enumerate(sorted((CORPUS / "seq-good").glob("*.jws")), 1):
        (tmp_path / f"bench-01-{i:06d}-x.jws.json").write_bytes(src.read_bytes())
    (tmp_path / "notes.txt").write_text("not a certificate")
    assert main(["verify", "--trust", ROOT, "--json", "--batch", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] == 4


def test_pki_commands_make_a_working_station(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, st = tmp_path / "ca", tmp_path / "station"
    assert (
        main(
            [
                "pki",
                "init-ca",
                "--out",
                str(ca),
                "--organisation",
                "Acme Refurb",
                "--key-type",
                "p256",
            ]
        )
        == 0
    )
    assert os.stat(ca / "ca.key").st_mode & 0o777 == 0o600
    assert main(["pki", "new-station", "--out", str(st), "--station-id", "bench-07"]) == 0
    assert (
        main(
            [
                "pki",
                "sign-station",
                str(st / "station.csr"),
                "--ca-key",
                str(ca / "ca.key"),
                "--ca-cert",
                str(ca / "ca.pem"),
                "--out",
                str(st / "station.pem"),
            ]
        )
        == 0
    )
    # running init-ca again must not destroy the CA key
    assert main(["pki", "init-ca", "--out", str(ca), "--organisation", "Acme"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    signer = load_station_signer(st / "station.key", st / "station.pem")
    issued = issue_certificate(
        fx.erased_record(station_id="bench-07"),
        signer,
        sequence=1,
        previous_hash=None,
        development=False,
        verification_url=None,
    )
    cert = tmp_path / "one.jws"
    cert.write_bytes(issued.data)
    assert main(["verify", "--trust", str(ca / "ca.pem"), str(cert)]) == 0
    other = tmp_path / "other"
    shutil.copytree(CORPUS, other / "c")
    assert main(["verify", "--trust", str(other / "c" / "root.pem"), str(cert)]) == 1


def test_parallel_batch_matches_serial() -> None:
    files = sorted(CORPUS.glob("*.jws"))
    blobs = [(p, p.read_bytes()) for p in files] * (400 // len(files) + 1)
    roots = x509.load_pem_x509_certificates((CORPUS / "root.pem").read_bytes())
    serial = verify_many(blobs, roots, jobs=1)
    parallel = verify_many(blobs, roots, jobs=2)
    assert parallel == serial
    assert {r["reason"] for r in serial if not r["valid"]} >= {"bad_signature", "untrusted_root"}


def test_verify_writes_pdfs_for_valid_certificates(tmp_path: Path) -> None:
    code = main(
        [
            "verify",
            "--trust",
            ROOT,
            "--pdf",
            str(tmp_path),
            "--language",
            "zh",
            str(CORPUS / "valid-ed25519.jws"),
            str(CORPUS / "flipped-payload-byte.jws"),
        ]
    )
    assert code == 1
    pdfs = list(tmp_path.glob("*.pdf"))
    assert len(pdfs) == 1 and pdfs[0].name.endswith(".zh.pdf")
    assert pdfs[0].read_bytes().startswith(b"%PDF")


def test_batch_reports_every_file_and_never_aborts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10: 11 good + 1 bad once ended in a ValueError, exit 1 and no report."""
    batch = tmp_path / "batch"
    batch.mkdir()
    good = [
        *sorted((CORPUS / "seq-good").glob("*.jws")),
        CORPUS / "valid-ed25519.jws", CORPUS / "valid-v2-ed25519.jws",
        CORPUS / "valid-not-erased-ios.jws", CORPUS / "valid-v2-not-erased-ios.jws",
    ]
    for i, path in enumerate(good):
        shutil.copy(path, batch / f"good-{i:02d}.jws")
    bad = {"month-13.jws": "invalid_time", "leap-second.jws": "invalid_time",
           "p384-station-key.jws": "unsupported_key",
           "other-station-signs.jws": "station_mismatch",
           "intermediate-under-pathlen0-root.jws": "path_length"}
    for name in bad:
        shutil.copy(CORPUS / name, batch / name)
    (batch / "empty.jws").write_bytes(b"")
    (batch / "binary.jws").write_bytes(bytes(range(256)))
    code = main(["verify", "--trust", ROOT, "--json", "--batch", str(batch)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    by_file = {Path(r["file"]).name: r for r in report["results"]}
    assert len(by_file) == len(good) + len(bad) + 2
    assert all(by_file[f"good-{i:02d}.jws"]["valid"] for i in range(len(good)))
    for name, reason in bad.items():
        assert by_file[name]["reason"] == reason, name
    assert by_file["empty.jws"]["reason"] == by_file["binary.jws"]["reason"] == "malformed"
    assert report["valid"] == len(good) and report["invalid"] == len(bad) + 2
