"""`wipeagent journal recover`: rebuild the journal from what a lost journal left behind.

Run it with the agent stopped, as root or as the service user. It keeps a damaged journal
(or one on another chain) aside under a dated name — never deleting it — re-imports every
exported or held certificate the journal lacks (verified against the station's trust
root; they are delivered again, and the platform answers 200 for those it holds), and
continues the station chain after the chain-head record's head. See wipeagent.chainhead
and docs/service.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509

from wipeagent.chainhead import CHAIN_HEAD_FILE, ChainRecord, recover_journal
from wipeagent.errors import ConfigError

DEFAULT_CONFIG = "/etc/wipeagent/agent.toml"
LOCK_FILE = "agent.lock"  # the agent holds an exclusive flock on it while it runs


def _where(args: argparse.Namespace) -> tuple[Path, list[x509.Certificate]]:
    """The state directory and the trust root the station's certificates chain to."""
    from wipeagent.certs.pki import dev_trust_root
    from wipeagent.certs.signer import load_certificates
    from wipeagent.config import load_config

    if args.state_dir:
        state = Path(args.state_dir)
        if not (state / "dev-pki").exists():
            raise ConfigError("--state-dir works for a development PKI only",
                              hint="use --config FILE so the station chain is known")
        return state, [dev_trust_root(state / "dev-pki")]
    config = load_config(Path(args.config))
    state = config.state_path
    if config.certificates.chain:
        return state, [load_certificates(Path(config.certificates.chain))[-1]]
    return state, [dev_trust_root(state / "dev-pki")]


@contextlib.contextmanager
def _agent_stopped(state: Path) -> Iterator[None]:
    """Hold the state directory's agent lock: refuse while an agent runs on it."""
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"an agent is running on {state}",
                              hint="stop it first: systemctl stop wipeagent") from None
        yield
    finally:
        os.close(fd)


def _give_back(state: Path) -> None:
    """Run as root, hand what the recovery wrote to the state directory's owner."""
    if os.geteuid() != 0:
        return
    owner = state.stat()
    paths = [*state.glob("journal.sqlite3*"), state / CHAIN_HEAD_FILE,
             state / "certificates", *(state / "certificates").glob("*")]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_uid != owner.st_uid:
                os.lchown(path, owner.st_uid, owner.st_gid)


def cmd_journal_recover(args: argparse.Namespace) -> int:
    """Rebuild or complete the journal from the exported certificates and the record."""
    from wipeagent.assemble import Paths  # heavy (drivers): only when the command runs

    state, roots = _where(args)
    paths = Paths(state)
    with _agent_stopped(state):
        report = asyncio.run(recover_journal(paths.journal, ChainRecord(state / CHAIN_HEAD_FILE),
                                             paths.certificates, roots))
        _give_back(state)
    print(f"journal {paths.journal} recovered: {report.summary()}")
    return 0


def register(subparsers: Any) -> None:
    """Add `journal recover`."""
    p = subparsers.add_parser("journal", help="the agent's journal (recovery)")
    verbs = p.add_subparsers(dest="journal_command", required=True, metavar="{recover}")
    q = verbs.add_parser("recover", help="rebuild the journal from the exported "
                         "certificates and the chain-head record (agent stopped)")
    where = q.add_mutually_exclusive_group()
    where.add_argument("--config", default=DEFAULT_CONFIG, help="agent configuration file")
    where.add_argument("--state-dir", default=None,
                       help="the state directory (development PKI only)")
    q.set_defaults(func=cmd_journal_recover, handler=cmd_journal_recover)
