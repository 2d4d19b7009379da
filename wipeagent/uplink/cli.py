"""Commands: `wipeagent outbox [list|requeue]`, `receiver`, `uplink-key`, `uplink-sign`.

`outbox list` (the default) reads the journal directly (read-only SQLite, safe while the
agent runs: WAL); `outbox requeue ID|--all` writes, through the Store; a running agent's
uplink picks re-queued certificates up within `uplink.poll_interval_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from wipeagent.certs.pki import load_trust_roots
from wipeagent.config import load_config
from wipeagent.errors import ConfigError, StoreError
from wipeagent.store import Store
from wipeagent.uplink.outbox import Outbox, OutboxItem, clean_text, count_items, list_items
from wipeagent.uplink.tls import ensure_dev_server_tls, new_client_key, server_context, sign_client

DEFAULT_CONFIG = "/etc/wipeagent/agent.toml"


def _journal_path(args: argparse.Namespace) -> Path:
    from wipeagent.assemble import Paths  # heavy (drivers): only when the command runs

    if args.state_dir:
        return Paths(Path(args.state_dir)).journal
    return Paths(load_config(Path(args.config)).state_path).journal


def read_outbox(journal: Path, *, include_delivered: bool = False) -> list[OutboxItem]:
    """The outbox of a journal file, read-only (works while the agent runs)."""
    if not journal.exists():
        raise StoreError(f"no journal at {journal}", hint="check --state-dir / --config")
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'deliveries'").fetchone()
            if has is None:
                # Nothing was ever sent: an empty TEMP table (allowed on a read-only
                # connection) lets the same query say "all pending".
                db.execute("CREATE TEMP TABLE deliveries (certificate_id TEXT, state TEXT,"
                           " attempts INTEGER, next_attempt_at TEXT, last_error TEXT,"
                           " failures INTEGER, failing_since TEXT)")
            return list_items(db, include_delivered=include_delivered)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"journal {journal}: {exc}") from exc


def requeue(journal: Path, certificate_id: str | None) -> int:
    """Re-queue parked certificates (one, or all when None) in a journal file; returns
    how many. Safe beside a running agent (SQLite WAL, the journal's own locking)."""
    if not journal.exists():
        raise StoreError(f"no journal at {journal}", hint="check --state-dir / --config")

    async def write() -> int:
        async with Store(journal) as store:
            return await Outbox(store).requeue(certificate_id)

    moved = asyncio.run(write())
    _keep_owner(journal)
    return moved


def _keep_owner(journal: Path) -> None:
    """Run as root beside a stopped agent, SQLite may leave -wal/-shm files owned by
    root that the service user could not open: give them the journal's owner."""
    if os.geteuid() != 0:
        return
    owner = journal.stat()
    for suffix in ("-wal", "-shm"):
        side = Path(f"{journal}{suffix}")
        try:
            if side.stat().st_uid != owner.st_uid:
                os.chown(side, owner.st_uid, owner.st_gid)
        except FileNotFoundError:
            continue


def cmd_outbox(args: argparse.Namespace) -> int:
    """`outbox list` (default): pending and parked certificates; `outbox requeue`."""
    journal = _journal_path(args)
    if getattr(args, "outbox_command", None) == "requeue":
        if bool(args.id) == bool(args.all_parked):
            raise ConfigError("outbox requeue wants a certificate id or --all",
                              hint="list them with `wipeagent outbox list`")
        moved = requeue(journal, None if args.all_parked else args.id)
        if args.id and not moved:
            print(f"{args.id}: no such certificate waiting in the outbox")
            return 1
        print(f"{moved} certificate(s) re-queued: due now, failure count reset")
        return 0
    items = read_outbox(journal, include_delivered=args.all)
    if args.json:
        print(json.dumps([{
            "certificate_id": i.certificate_id, "station_id": i.station_id,
            "sequence": i.sequence, "sha256": i.sha256, "created_at": i.created_at,
            "state": i.state, "attempts": i.attempts, "failures": i.failures,
            "failing_since": i.failing_since.isoformat() if i.failing_since else None,
            "next_attempt_at": i.next_attempt_at.isoformat() if i.next_attempt_at else None,
            "last_error": i.last_error,
        } for i in items], indent=2))
        return 0
    if not items:
        print("outbox empty: every certificate has been delivered")
        return 0
    print(f"{'state':<9} {'certificate':<36} {'seq':>6} {'tries':>5}  next / reason")
    for i in items:
        if i.state == "parked":
            detail = f"PARKED: {i.last_error or ''}"
        elif i.state == "delivered":
            detail = ""
        elif i.next_attempt_at is not None and i.attempts:
            detail = f"{i.next_attempt_at:%Y-%m-%d %H:%M:%S}Z  {i.last_error or ''}"
        else:
            detail = "now"
        print(f"{i.state:<9} {i.certificate_id:<36} {i.sequence:>6} {i.attempts:>5}  "
              f"{clean_text(detail, 160)}")
    parked = sum(i.state == "parked" for i in items)
    if parked:
        print(f"{parked} parked: not sent until re-queued; fix the cause, then "
              "`wipeagent outbox requeue ID` (or `--all`)")
    return 0


def outbox_counts(journal: Path) -> dict[str, int]:
    """Counts per state of a journal file (read-only), for status displays."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'deliveries'").fetchone():
            c = count_items(db)
            return {"pending": c.pending, "parked": c.parked, "delivered": c.delivered}
        (n,) = db.execute("SELECT COUNT(*) FROM certificates").fetchone()
        return {"pending": n, "parked": 0, "delivered": 0}
    finally:
        db.close()


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen wants HOST:PORT, got {text!r}")
    return host, int(port)


def cmd_receiver(args: argparse.Namespace) -> int:
    """Run the reference receiver until interrupted."""
    from wipeagent.uplink.receiver import Receiver

    host, port = _listen(args.listen)
    store = Path(args.store)
    trust = [c for path in args.trust for c in load_trust_roots(Path(path))]
    if not trust:
        raise ConfigError("--trust ROOT.pem is required (the roots certificates chain to)")
    if args.tls_cert and args.tls_key:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    else:
        dev = ensure_dev_server_tls(store / "tls", host=host)
        cert, key = dev.cert, dev.key
        print(f"development server certificate; clients trust {dev.ca}")
    # Mutual TLS always (issue 10): client certificates come from the organisation CA,
    # which is also the trust root, unless --client-ca names another file.
    client_ca = Path(args.client_ca) if args.client_ca else Path(args.trust[0])
    context = server_context(cert=cert, key=key, client_ca=client_ca)
    client_roots = load_trust_roots(client_ca)

    async def serve() -> None:
        receiver = await Receiver(store, trust, ssl_context=context,
                                  client_roots=client_roots).start(host, port)
        print(f"receiving at {receiver.url}; certificates in {store}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await receiver.stop()

    asyncio.run(serve())
    return 0


def cmd_uplink_key(args: argparse.Namespace) -> int:
    """Make the bench's uplink TLS key and CSR."""
    files = new_client_key(Path(args.out), station_id=args.station_id)
    print(f"uplink key {files.key} (0600); send {files.csr} to the CA (uplink-sign)")
    return 0


def cmd_uplink_sign(args: argparse.Namespace) -> int:
    """Issue the uplink TLS client certificate from a CSR (at the CA)."""
    out = sign_client(Path(args.csr), ca_key_path=Path(args.ca_key),
                      ca_cert_path=Path(args.ca_cert), out_path=Path(args.out),
                      validity_days=args.days)
    print(f"uplink client certificate {out}; set uplink.client_cert to it on the bench")
    return 0


def _outbox_options(p: argparse.ArgumentParser, *, verb: str | None) -> None:
    """Options of `outbox` and its verbs. On a verb they default to SUPPRESS, so a value
    given before the verb (`outbox --state-dir D list`) is not overwritten."""
    def d(value: Any) -> Any:
        return value if verb is None else argparse.SUPPRESS

    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", default=d(DEFAULT_CONFIG), help="agent configuration file")
    where.add_argument("--state-dir", default=d(None), help="the agent's state directory")
    if verb == "requeue":
        return
    p.add_argument("--all", action="store_true", default=d(False),
                   help="include delivered certificates")
    p.add_argument("--json", action="store_true", default=d(False),
                   help="machine-readable list")


def register(subparsers: Any) -> None:
    """Add `outbox`, `receiver`, `uplink-key` and `uplink-sign` (each sets func and handler)."""
    p = subparsers.add_parser("outbox", help="certificates not yet delivered to the platform")
    _outbox_options(p, verb=None)
    p.set_defaults(func=cmd_outbox, handler=cmd_outbox)
    verbs = p.add_subparsers(dest="outbox_command", metavar="{list,requeue}")
    q = verbs.add_parser("list", help="pending and parked certificates (the default)")
    _outbox_options(q, verb="list")
    q = verbs.add_parser("requeue", help="send parked certificates again")
    _outbox_options(q, verb="requeue")
    q.add_argument("id", nargs="?", help="the certificate id (see `outbox list`)")
    q.add_argument("--all", dest="all_parked", action="store_true",
                   help="every parked certificate")

    p = subparsers.add_parser("receiver", help="reference ingest receiver (tests, demo)")
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--store", required=True, metavar="DIR", help="where certificates go")
    p.add_argument("--trust", action="append", default=[], metavar="ROOT.pem",
                   help="trusted root CA for wipe certificates; repeatable")
    p.add_argument("--tls-cert", help="server certificate chain (PEM); default: a "
                   "development certificate made in DIR/tls")
    p.add_argument("--tls-key", help="server key (PEM)")
    p.add_argument("--client-ca", metavar="CA.pem",
                   help="CA of the stations' TLS client certificates (default: the first "
                   "--trust root); a client certificate is always required")
    p.set_defaults(func=cmd_receiver, handler=cmd_receiver)

    p = subparsers.add_parser("uplink-key", help="make the bench's uplink TLS key and CSR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--station-id", required=True)
    p.set_defaults(func=cmd_uplink_key, handler=cmd_uplink_key)

    p = subparsers.add_parser("uplink-sign", help="issue an uplink TLS client certificate")
    p.add_argument("csr", metavar="CSR")
    p.add_argument("--ca-key", required=True)
    p.add_argument("--ca-cert", required=True)
    p.add_argument("--out", required=True, metavar="CERT.pem")
    p.add_argument("--days", type=int, default=398)
    p.set_defaults(func=cmd_uplink_sign, handler=cmd_uplink_sign)
