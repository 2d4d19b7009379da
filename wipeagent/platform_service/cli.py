"""`wipeagent platform serve | migrate | token add|list|revoke`.

Imports of the service (SQLAlchemy, Alembic, psycopg) happen when a command runs, so
`wipeagent --help` works on a bench install without the `platform` extra; a missing
extra is reported with the install command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from wipeagent.errors import ConfigError

DEFAULT_DATABASE = "sqlite:///platform-data/platform.sqlite3"
DATABASE_ENV = "WIPEAGENT_PLATFORM_DATABASE"


def _need_extra() -> None:
    # A ModuleNotFoundError here becomes wipeagent.cli's one line naming the extra
    # ("needs the 'platform' extra ...: pip install 'wipeagent[platform]'", exit 69).
    import alembic  # noqa: F401
    import sqlalchemy  # noqa: F401


def _database(args: argparse.Namespace) -> Any:
    _need_extra()
    from wipeagent.platform_service.db import database_url

    return database_url(args.database)


def _listen(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what} wants HOST:PORT, got {text!r}")
    return host, int(port)


def _roots(paths: list[str]) -> list[Any]:
    from wipeagent.certs.pki import load_trust_roots

    return [c for path in paths for c in load_trust_roots(Path(path))]


def _server_tls(args: argparse.Namespace, host: str) -> ssl.SSLContext:
    """HTTPS with client certificates requested (required only by the ingest route)."""
    from wipeagent.platform_service.app import tls_context
    from wipeagent.uplink.tls import ensure_dev_server_tls

    if args.tls_cert and args.tls_key:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    elif args.tls_cert or args.tls_key:
        raise ConfigError("--tls-cert and --tls-key go together")
    else:
        dev = ensure_dev_server_tls(Path(args.tls_dir), host=host)
        cert, key = dev.cert, dev.key
        print(f"development server certificate; clients trust {dev.ca}", flush=True)
    return tls_context(cert=cert, key=key,
                       client_cas=[Path(p) for p in args.client_ca or args.trust])


def ensure_schema(url: Any, *, migrate: bool) -> None:
    """Migrate (SQLite always, PostgreSQL with --migrate) or refuse a stale schema."""
    from wipeagent.platform_service.db import current_revision, head_revision, is_sqlite
    from wipeagent.platform_service.db import migrate as run_migrations

    if current_revision(url) == head_revision():
        return
    if migrate or is_sqlite(url):
        run_migrations(url)
        return
    raise ConfigError("the database schema is not at this version's revision "
                      f"({head_revision()})",
                      hint="run `wipeagent platform migrate --database URL` once (or start "
                           "one process with --migrate)")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the platform service until SIGINT/SIGTERM."""
    url = _database(args)
    from wipeagent.platform_service.app import PlatformService, PlatformSettings

    trust = _roots(args.trust)
    if not trust:
        raise ConfigError("--trust ROOT.pem is required (the organisation roots)")
    client_roots = _roots(args.client_ca) if args.client_ca else trust
    host, port = _listen(args.listen, "--listen")
    public = _listen(args.public_listen, "--public-listen") if args.public_listen else None
    context = _server_tls(args, host)
    ensure_schema(url, migrate=args.migrate)
    settings = PlatformSettings(database=url, trust_roots=trust, client_roots=client_roots,
                                public_rate=args.public_rate, public_burst=args.public_burst,
                                behind_proxy=args.behind_proxy, pool_size=args.pool_size)

    async def serve() -> None:
        service = PlatformService(settings)
        await service.start(host, port, ssl_context=context, public=public,
                            reuse_port=args.reuse_port)
        print(f"platform service (pid {os.getpid()}): ingest {service.ingest_url}; "
              f"verification page {service.verify_url}; database "
              f"{url.render_as_string(hide_password=True)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await service.stop()

    asyncio.run(serve())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the database schema to the newest revision (or --revision)."""
    url = _database(args)
    from wipeagent.platform_service.db import current_revision, migrate

    before = current_revision(url)
    migrate(url, args.revision)
    print(f"database schema: {before or 'empty'} -> {current_revision(url)}")
    return 0


def _run_tokens(args: argparse.Namespace) -> int:
    url = _database(args)
    from datetime import UTC, datetime

    from wipeagent.platform_service.db import async_engine
    from wipeagent.platform_service.tokens import add_token, list_tokens, revoke_token

    ensure_schema(url, migrate=False)

    async def run() -> int:
        engine = async_engine(url)
        try:
            async with engine.begin() as conn:
                now = datetime.now(UTC)
                if args.action == "add":
                    token = await add_token(conn, args.name, now)
                    print(token)
                    print(f"(token for {args.name}: shown once; send it as "
                          "`Authorization: Bearer <token>`)", flush=True)
                    return 0
                if args.action == "revoke":
                    if await revoke_token(conn, args.name, now):
                        print(f"token {args.name} revoked")
                        return 0
                    print(f"no active token named {args.name}")
                    return 1
                for t in await list_tokens(conn):
                    state = f"revoked {t['revoked_at']:%Y-%m-%d}" if t["revoked_at"] \
                        else "active"
                    used = f"{t['last_used_at']:%Y-%m-%d %H:%M}" if t["last_used_at"] \
                        else "never"
                    print(f"{t['name']:<24} {state:<20} created {t['created_at']:%Y-%m-%d}"
                          f"  last used {used}")
                return 0
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _add_database(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database", default=os.environ.get(DATABASE_ENV, DEFAULT_DATABASE),
                   metavar="URL", help="postgresql://USER@HOST:PORT/DB or sqlite:///FILE "
                   f"(default ${DATABASE_ENV} or {DEFAULT_DATABASE})")


def register(subparsers: Any) -> None:
    """Add `platform` with its sub-commands (each sets func and handler)."""
    platform = subparsers.add_parser(
        "platform", help="the platform service: ingest, queries, verification page")
    sub = platform.add_subparsers(dest="platform_command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the platform service")
    _add_database(p)
    p.add_argument("--listen", default="127.0.0.1:8443",
                   help="HOST:PORT of the HTTPS listener (ingest with mutual TLS, queries "
                   "with a token, public routes)")
    p.add_argument("--public-listen", metavar="HOST:PORT",
                   help="also serve the page, lookup and health over plain HTTP here (for "
                   "a TLS-terminating load balancer)")
    p.add_argument("--trust", action="append", default=[], metavar="ROOT.pem",
                   help="organisation root CA wipe certificates must chain to; repeatable")
    p.add_argument("--client-ca", action="append", default=[], metavar="CA.pem",
                   help="CA of the stations' TLS client certificates (default: the --trust "
                   "roots); repeatable")
    p.add_argument("--tls-cert", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", help="server key (PEM)")
    p.add_argument("--tls-dir", default="platform-data/tls",
                   help="where a development server certificate is made without --tls-cert")
    p.add_argument("--public-rate", type=float, default=2.0,
                   help="public lookups per second per client address (default 2)")
    p.add_argument("--public-burst", type=int, default=30,
                   help="public lookups a client may make at once (default 30)")
    p.add_argument("--behind-proxy", action="store_true",
                   help="rate-limit by the rightmost X-Forwarded-For address")
    p.add_argument("--pool-size", type=int, default=10,
                   help="database connections per process (PostgreSQL)")
    p.add_argument("--migrate", action="store_true",
                   help="migrate a PostgreSQL schema at start (SQLite always is)")
    p.add_argument("--reuse-port", action="store_true",
                   help="SO_REUSEPORT: several processes share one port, the kernel "
                   "spreads connections over them")
    p.set_defaults(func=cmd_serve, handler=cmd_serve)

    p = sub.add_parser("migrate", help="create or upgrade the database schema (Alembic)")
    _add_database(p)
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_migrate, handler=cmd_migrate)

    p = sub.add_parser("token", help="bearer tokens for the query API")
    tokens = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "make a token (printed once)"),
                         ("revoke", "revoke a token"), ("list", "list tokens")):
        t = tokens.add_parser(action, help=text)
        _add_database(t)
        if action != "list":
            t.add_argument("name", metavar="NAME")
        t.set_defaults(func=_run_tokens, handler=_run_tokens)
