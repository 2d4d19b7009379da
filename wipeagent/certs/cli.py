"""`wipeagent verify` and `wipeagent pki ...`: argparse sub-commands for the lead's cli.py.

`register(subparsers)` adds the commands; each sets `func` and `handler` (one callable,
`handler(args) -> int`, the process exit code). Exit codes of `verify` (documented in
docs/certificate.md):

    0  every certificate is valid and the set has no ledger problem
    1  at least one certificate is invalid
    2  usage error (bad arguments, no trust root)
    3  every certificate is valid, but the set has ledger problems (gap, fork, duplicate)
    4  an input file or trust root could not be read
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wipeagent.certs import jws, pki
from wipeagent.certs.verify import LedgerRecord, Verifier, check_sequence, verifier_for
from wipeagent.errors import CertificateError, ConfigError

# What --batch picks up: our files and the agent's exports (<station>-<seq>-<id>.jws.json).
BATCH_SUFFIXES = (".jws", ".jws.json")

# Below this many certificates per worker, forking costs more than it saves.
MIN_PER_JOB = 200

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_SEQUENCE = 3
EXIT_UNREADABLE = 4


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:
        # One byte over the limit is enough for the verifier to say "too_large".
        return handle.read(jws.MAX_CERTIFICATE_BYTES + 1)


def _one_line(text: str) -> str:
    # Messages can quote certificate content: keep a terminal line a single, printable line.
    return "".join(c if c.isprintable() else "?" for c in text)[:300]


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify certificate files (and/or a --batch folder) against trust roots."""
    if not args.trust:
        print("verify: give at least one --trust ROOT.pem", file=sys.stderr)
        return EXIT_USAGE
    if args.pdf:
        # Before any work: without the `pdf` extra this fails at once (wipeagent.cli).
        import wipeagent.certs.pdf  # noqa: F401
    roots = []
    try:
        for path in args.trust:
            roots.extend(pki.load_trust_roots(Path(path)))
    except ConfigError as exc:
        print(f"verify: {exc} ({exc.hint})", file=sys.stderr)
        return EXIT_UNREADABLE
    paths = [Path(p) for p in args.files]
    if args.batch:
        folder = Path(args.batch)
        if not folder.is_dir():
            print(f"verify: {folder} is not a readable folder", file=sys.stderr)
            return EXIT_UNREADABLE
        paths.extend(sorted(p for p in folder.iterdir() if p.name.endswith(BATCH_SUFFIXES)))
    if not paths:
        print("verify: no certificate files given", file=sys.stderr)
        return EXIT_USAGE
    blobs: list[tuple[Path, bytes]] = []
    unreadable = 0
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            blobs.append((path, _read(path)))
        except OSError as exc:
            unreadable += 1
            results.append({"file": str(path), "valid": False, "reason": "unreadable",
                            "message": exc.strerror or str(exc)})
    started = time.perf_counter()
    checked = verify_many(blobs, roots, jobs=args.jobs or os.cpu_count() or 1)
    elapsed = time.perf_counter() - started
    results.extend(checked)
    verified = [
        LedgerRecord(r["certificate_id"], r["sha256"], r["station_id"], r["sequence"],
                     r["previous_hash"])
        for r in checked if r["valid"]
    ]
    problems = check_sequence(verified)
    invalid = sum(1 for r in results if not r["valid"]) - unreadable
    report: dict[str, Any] = {
        "results": results,
        "sequence_problems": [
            {"kind": p.kind, "station_id": p.station_id, "sequence": p.sequence,
             "certificate_ids": list(p.certificate_ids), "message": p.message}
            for p in problems
        ],
        "valid": len(verified), "invalid": invalid, "unreadable": unreadable,
    }
    if args.batch:
        rate = len(blobs) / elapsed if elapsed > 0 else float("inf")
        report["throughput"] = {"certificates": len(blobs), "seconds": round(elapsed, 6),
                                "per_second": round(rate, 1)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            if r["valid"]:
                dev = " DEVELOPMENT" if r["development"] else ""
                print(f"OK       {r['file']}  {r['certificate_id']}  {r['outcome']}  "
                      f"{_one_line(r['station_id'])}#{r['sequence']}{dev}")
            else:
                print(f"INVALID  {r['file']}  {r['reason']}: {_one_line(r['message'])}")
        for p in problems:
            print(f"LEDGER   {p.kind}  {_one_line(p.station_id)}  {_one_line(p.message)}")
        if "throughput" in report:
            t = report["throughput"]
            print(f"verified {t['certificates']} certificates in {t['seconds']:.3f} s "
                  f"({t['per_second']:.0f}/s)")
    if args.pdf:
        _write_pdfs(blobs, roots, Path(args.pdf), args.language)
    if unreadable:
        return EXIT_UNREADABLE
    if invalid:
        return EXIT_INVALID
    if problems:
        return EXIT_SEQUENCE
    return EXIT_OK


def _verify_blobs(
    verifier: Verifier, blobs: Sequence[tuple[str, bytes]]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for name, data in blobs:
        try:
            cert = verifier.verify(data)
        except CertificateError as exc:
            results.append({"file": name, "valid": False, "reason": exc.reason,
                            "message": exc.message})
            continue
        results.append({
            "file": name, "valid": True, "certificate_id": cert.certificate_id,
            "sha256": cert.sha256, "outcome": cert.outcome, "station_id": cert.station_id,
            "sequence": cert.sequence, "previous_hash": cert.previous_hash,
            "issued_at": cert.payload["issued_at"], "development": cert.development,
        })
    return results


_worker_verifier: Verifier | None = None


def _worker_init(roots_der: list[bytes]) -> None:
    global _worker_verifier  # noqa: PLW0603 - one verifier per worker process
    _worker_verifier = Verifier([x509.load_der_x509_certificate(d) for d in roots_der])


def _worker_run(blobs: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    assert _worker_verifier is not None
    return _verify_blobs(_worker_verifier, blobs)


def verify_many(
    blobs: Sequence[tuple[Path, bytes]], roots: Sequence[x509.Certificate], *, jobs: int = 1
) -> list[dict[str, Any]]:
    """Verify many certificates, in `jobs` worker processes when the batch is large.

    One result dict per input, in input order. Workers are forked (Linux), each with its
    own chain cache; small batches and jobs=1 stay in this process.
    """
    named = [(str(path), data) for path, data in blobs]
    jobs = max(1, min(jobs, len(named) // MIN_PER_JOB))
    if jobs == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return _verify_blobs(verifier_for(roots), named)
    size = -(-len(named) // (jobs * 4))  # a few chunks per worker evens out the load
    chunks = [named[i : i + size] for i in range(0, len(named), size)]
    roots_der = [r.public_bytes(serialization.Encoding.DER) for r in roots]
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init, initargs=(roots_der,),
    ) as pool:
        return [r for chunk in pool.map(_worker_run, chunks) for r in chunk]


def _write_pdfs(
    blobs: Sequence[tuple[Path, bytes]], roots: Sequence[x509.Certificate], out: Path,
    language: str,
) -> None:
    """Render a PDF for every valid certificate (verified again: PDFs only from verified)."""
    # reportlab is heavy: load it only when a PDF is asked for.
    from wipeagent.certs.pdf import render_pdf

    out.mkdir(parents=True, exist_ok=True)
    verifier = verifier_for(roots)
    for _, data in blobs:
        try:
            cert = verifier.verify(data)
        except CertificateError:
            continue
        # The id is a schema-checked UUID: safe as a file name.
        target = out / f"{cert.certificate_id}.{language}.pdf"
        target.write_bytes(render_pdf(cert, language=language))
        print(f"PDF      {target}", file=sys.stderr)


def _pki_errors(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ConfigError as exc:
            print(f"pki: {exc}\nhint: {exc.hint}", file=sys.stderr)
            return EXIT_INVALID
    return run


@_pki_errors
def cmd_init_ca(args: argparse.Namespace) -> int:
    """Create the organisation root CA."""
    files = pki.init_ca(Path(args.out), organisation=args.organisation, common_name=args.name,
                        key_type=args.key_type, validity_days=args.days,
                        development=args.development)
    print(f"root CA key  {files.key} (mode 0600: keep it offline)\nroot CA cert {files.cert}")
    return EXIT_OK


@_pki_errors
def cmd_new_station(args: argparse.Namespace) -> int:
    """Create a station key and CSR."""
    req = pki.new_station(Path(args.out), station_id=args.station_id,
                          organisation=args.organisation, key_type=args.key_type)
    print(f"station key {req.key} (mode 0600)\nCSR         {req.csr} (take it to the CA)")
    return EXIT_OK


@_pki_errors
def cmd_sign_station(args: argparse.Namespace) -> int:
    """Issue a station certificate chain from a CSR."""
    out = pki.sign_station(Path(args.csr), ca_key_path=Path(args.ca_key),
                           ca_cert_path=Path(args.ca_cert), out_path=Path(args.out),
                           validity_days=args.days)
    print(f"station chain {out} (station certificate, then root CA)")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add `verify` and `pki` to an argparse sub-parser set.

    Each command sets both `func` and `handler` (the same callable, args -> exit code).
    """
    verify = subparsers.add_parser(
        "verify", help="verify wipe certificates",
        description="Verify wipe certificates. Exit 0 valid, 1 invalid, 2 usage, "
                    "3 ledger problem (gap/fork/duplicate), 4 unreadable input.")
    verify.add_argument("files", nargs="*", metavar="FILE", help="certificate files (.jws)")
    verify.add_argument("--trust", action="append", default=[], metavar="ROOT.pem",
                        help="trusted root CA certificate(s), PEM; repeatable")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument("--batch", metavar="DIR", help="also verify every *.jws and "
                        "*.jws.json in DIR and report throughput")
    verify.add_argument("--pdf", metavar="DIR", help="write a PDF of each valid certificate "
                        "to DIR as <certificate_id>.<language>.pdf")
    verify.add_argument("--language", choices=("en", "zh"), default="en",
                        help="PDF language (default en)")
    verify.add_argument("--jobs", type=int, default=0,
                        help="worker processes for large batches (default 0: one per CPU; "
                        "batches under 200 certificates a worker stay in one process; "
                        "see docs/benchmarks.md)")
    verify.set_defaults(func=cmd_verify, handler=cmd_verify)

    pki_parser = subparsers.add_parser("pki", help="root CA and station certificates")
    pki_sub = pki_parser.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init-ca", help="create the organisation root CA (offline)")
    init.add_argument("--out", required=True, metavar="DIR")
    init.add_argument("--organisation", required=True)
    init.add_argument("--name", default=None, help="CA common name")
    init.add_argument("--key-type", choices=pki.KEY_TYPES, default="ed25519")
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    init.add_argument("--development", action="store_true",
                      help="mark as a development CA (its certificates say development)")
    init.set_defaults(func=cmd_init_ca, handler=cmd_init_ca)
    new = pki_sub.add_parser("new-station", help="create a station key and CSR (on the bench)")
    new.add_argument("--out", required=True, metavar="DIR")
    new.add_argument("--station-id", required=True)
    new.add_argument("--organisation", default="")
    new.add_argument("--key-type", choices=pki.KEY_TYPES, default="ed25519")
    new.set_defaults(func=cmd_new_station, handler=cmd_new_station)
    sign = pki_sub.add_parser("sign-station", help="issue a station certificate from a CSR")
    sign.add_argument("csr", metavar="CSR")
    sign.add_argument("--ca-key", required=True)
    sign.add_argument("--ca-cert", required=True)
    sign.add_argument("--out", required=True, metavar="CHAIN.pem")
    sign.add_argument("--days", type=int, default=398, help="validity (default 398)")
    sign.set_defaults(func=cmd_sign_station, handler=cmd_sign_station)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: `python -m wipeagent.certs.cli verify ...`."""
    parser = argparse.ArgumentParser(prog="wipeagent-certs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
