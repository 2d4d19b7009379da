"""The platform service: ingest, queries, public lookup and the verification page (aiohttp).

    service = PlatformService(settings)
    await service.start(host, port, ssl_context=tls, public=(host, port))
    ... service.ingest_url, service.verify_url ...
    await service.stop()

Two listeners, one application each:

- the **main listener** (HTTPS, client certificates requested but optional at the TLS
  layer): POST /v1/certificates for stations (their TLS client certificate is required
  and must name the certificate's station, see `wipeagent.uplink.ingest`), the query API
  for platform engineers (`Authorization: Bearer` token, see tokens.py), and everything
  the public listener serves;
- the optional **public listener** (plain HTTP, meant to sit behind the TLS-terminating
  load balancer that serves the public host name; loopback is a secure context for the
  browser too): the verification page, the public lookup by id AND hash, the trust
  roots the page verifies against, and /v1/health. Nothing there needs a secret.

The service keeps no state of its own beyond the database, so any number of processes
can serve one PostgreSQL database (docs/platform.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from wipeagent.certs.jws import MAX_CERTIFICATE_BYTES
from wipeagent.certs.payload import SCHEMA_VERSIONS, schema
from wipeagent.certs.pki import is_development
from wipeagent.certs.verify import VerifiedCertificate, verify_certificate
from wipeagent.clock import Clock
from wipeagent.errors import CertificateError
from wipeagent.platform_service import queries
from wipeagent.platform_service.db import async_engine, is_sqlite, stations
from wipeagent.platform_service.ledger import (
    Stored,
    organisation_name,
    root_fingerprint,
    store_certificate,
)
from wipeagent.platform_service.ratelimit import RateLimiter
from wipeagent.platform_service.tokens import token_owner
from wipeagent.uplink.ingest import (
    CERTIFICATE_ID,
    MEDIA_TYPE,
    PATH,
    SHA256_HEX,
    ClientIdentity,
    IngestRefusal,
    check_client,
    client_identity,
    problem,
    read_upload,
    refusal_for,
    refuse,
    require_client,
    trust_anchor,
)
from wipeagent.uplink.tls import server_context

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
VERIFY_PATH = "/verify"
LOOKUP_PATH = "/v1/public/certificates"
ROOTS_PATH = "/v1/public/trust-roots"
SCHEMAS_PATH = "/v1/public/schemas"
HEALTH_PATH = "/v1/health"
# A booking reference as the certificate schema allows it (intake.reference): printable
# ASCII, at most 100 characters; the empty reference is "no booking" and not searchable.
BOOKING_REFERENCE = re.compile(r"^[ -~]{1,100}$")

# The page loads only our own files and talks only to us (no CDN, no inline script).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page URL carries a certificate id and hash
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class PlatformSettings:
    """What a platform service needs (see `wipeagent platform serve --help`)."""

    database: URL
    trust_roots: list[x509.Certificate]  # roots wipe certificates must chain to
    client_roots: list[x509.Certificate]  # roots of the stations' TLS client certificates
    public_rate: float = 2.0  # public lookups a second per client address, on average
    public_burst: int = 30
    behind_proxy: bool = False  # take the client address from X-Forwarded-For (rightmost)
    pool_size: int = 10
    extra: dict[str, Any] = field(default_factory=dict)


def tls_context(*, cert: Path, key: Path, client_cas: list[Path]) -> ssl.SSLContext:
    """The main listener's TLS: our server certificate; client certificates chaining to
    `client_cas` requested but optional at the TLS layer (browsers opening the page and
    engineers with tokens have none), and then required by the ingest route."""
    context = server_context(cert=cert, key=key, client_ca=client_cas[0])
    for extra in client_cas[1:]:
        context.load_verify_locations(cafile=str(extra))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _now() -> datetime:
    return datetime.now(UTC)


def _root_json(root: x509.Certificate) -> dict[str, Any]:
    return {
        "pem": root.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        "sha256": root_fingerprint(root),
        "organisation": organisation_name(root),
        "subject": root.subject.rfc4514_string(),
        "development": is_development(root),
    }


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        if exc.status >= 400 and exc.content_type != "application/json":
            response = problem(exc.status, "http_" + str(exc.status), exc.reason)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class PlatformService:
    """The platform service over one database (see the module docstring)."""

    def __init__(self, settings: PlatformSettings, *, clock: Clock | None = None,
                 engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.engine = engine or async_engine(settings.database, pool_size=settings.pool_size)
        self.sqlite = is_sqlite(settings.database)
        # SQLite has one writer: queue ingests here rather than in SQLite's busy loop.
        self._write_lock = asyncio.Lock()
        self.limiter = RateLimiter(self.clock, rate=settings.public_rate,
                                   burst=settings.public_burst)
        self._roots_body = json.dumps(
            {"roots": [_root_json(r) for r in settings.trust_roots]}).encode()
        # The page validates payloads against the very schemas `verify` uses.
        self._schemas_body = json.dumps(
            {"schemas": {str(v): schema(v) for v in SCHEMA_VERSIONS}}).encode()
        self._runners: list[web.AppRunner] = []
        self.host = self.public_host = "127.0.0.1"
        self.port = 0
        self.public_port: int | None = None

    # -- applications -----------------------------------------------------------------

    def _add_public_routes(self, app: web.Application) -> None:
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(LOOKUP_PATH + "/{certificate_id}/{sha256}", self._lookup)
        app.router.add_get(ROOTS_PATH, self._roots)
        app.router.add_get(SCHEMAS_PATH, self._schemas)
        app.router.add_get(VERIFY_PATH, self._page)
        app.router.add_get(VERIFY_PATH + "/", self._page)
        app.router.add_static(VERIFY_PATH + "/assets", WEB_DIR / "assets",
                              append_version=False)

    def app(self) -> web.Application:
        """The main (HTTPS) application: ingest, queries and the public routes."""
        app = web.Application(client_max_size=MAX_CERTIFICATE_BYTES + 1024,
                              middlewares=[_security_headers])
        app.router.add_post(PATH, self._ingest)
        app.router.add_get(PATH, self._search)
        app.router.add_get(PATH + "/{certificate_id}", self._certificate)
        app.router.add_get("/v1/stations", self._stations)
        app.router.add_get("/v1/stations/{station_id}/ledger", self._ledger)
        app.router.add_get("/v1/ledger/problems", self._problems)
        self._add_public_routes(app)
        return app

    def public_app(self) -> web.Application:
        """The public application: page, lookup, trust roots, health."""
        app = web.Application(client_max_size=4096, middlewares=[_security_headers])
        self._add_public_routes(app)
        return app

    # -- life cycle -------------------------------------------------------------------

    async def _listen(self, app: web.Application, host: str, port: int,
                      ssl_context: Any, reuse_port: bool = False) -> tuple[str, int]:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context,
                           reuse_port=reuse_port or None)
        await site.start()
        server = site._server  # aiohttp has no public accessor for the bound port
        assert isinstance(server, asyncio.base_events.Server)
        bound = server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: Any,
                    public: tuple[str, int] | None = None, reuse_port: bool = False
                    ) -> PlatformService:
        """Listen (port 0: ephemeral); `public` adds the plain-HTTP public listener;
        `reuse_port` lets several processes share the main port (SO_REUSEPORT)."""
        async with self.engine.connect() as conn:  # fail now, not at the first upload
            await conn.execute(text("SELECT 1"))
        self.host, self.port = await self._listen(self.app(), host, port, ssl_context,
                                                  reuse_port)
        if public is not None:
            self.public_host, self.public_port = await self._listen(
                self.public_app(), public[0], public[1], None)
        return self

    async def stop(self) -> None:
        """Stop listening, close connections and the database pool."""
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.engine.dispose()

    async def __aenter__(self) -> PlatformService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """https://host:port of the main listener."""
        return f"https://{self.host}:{self.port}"

    @property
    def ingest_url(self) -> str:
        """Where benches POST (the `uplink.url` of an agent)."""
        return self.base_url + PATH

    @property
    def public_base_url(self) -> str:
        """Base URL of the public routes (the public listener if any, else the main)."""
        if self.public_port is None:
            return self.base_url
        return f"http://{self.public_host}:{self.public_port}"

    @property
    def verify_url(self) -> str:
        """The page's URL: what `certificates.verification_url` should be on benches."""
        return self.public_base_url + VERIFY_PATH

    # -- ingest -------------------------------------------------------------------------

    async def _verify(self, data: bytes) -> VerifiedCertificate:
        roots = self.settings.trust_roots
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: verify_certificate(data, trust_roots=roots))
        except CertificateError as exc:
            raise refusal_for(exc) from exc

    async def _store(self, verified: VerifiedCertificate, data: bytes,
                     root: x509.Certificate, client: str) -> Stored:
        for attempt in range(3):
            try:
                if self.sqlite:
                    async with self._write_lock, self.engine.begin() as conn:
                        return await store_certificate(conn, verified, data, root=root,
                                                       client=client, now=_now())
                async with self.engine.begin() as conn:
                    return await store_certificate(conn, verified, data, root=root,
                                                   client=client, now=_now())
            except IntegrityError:
                # Another process stored this id (or created this station) between our
                # read and our write: the next attempt sees it and answers accordingly.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _ingest(self, request: web.Request) -> web.Response:
        client: ClientIdentity | None = None
        try:
            client = require_client(client_identity(request, self.settings.client_roots))
            key, data = await read_upload(request)
            verified = await self._verify(data)
            if verified.certificate_id != key:
                raise refuse(400, "idempotency_key",
                             "Idempotency-Key is not the certificate's id")
            anchor = trust_anchor(verified.chain, self.settings.trust_roots)
            check_client(client, verified, anchor)
            assert anchor is not None  # check_client refuses a missing anchor
            stored = await self._store(verified, data, anchor, client.label)
        except IngestRefusal as refusal:
            log.info("upload refused (%s) from %s", refusal.response.status,
                     client.label if client else request.remote)
            return refusal.response
        except SQLAlchemyError:
            log.exception("database error while storing an upload")
            response = problem(503, "database_unavailable", "try again later")
            response.headers["Retry-After"] = "30"
            return response
        receipt = {
            "certificate_id": stored.certificate_id,
            "sha256": stored.sha256,
            "status": stored.status,
            "received_at": stored.received_at.isoformat(timespec="seconds"),
            "ledger": stored.ledger_json(),
        }
        if stored.status == "conflict":
            log.error("certificate %s from %s: a different certificate with this id is held",
                      stored.certificate_id, client.label)
            return problem(409, "conflict", "a different certificate with this id is held",
                           sha256=stored.sha256, ledger=stored.ledger_json())
        for found in stored.problems:
            log.error("ledger problem: %s", found.message)
        headers = {"Location": f"{PATH}/{stored.certificate_id}"}
        return web.json_response(receipt, status=201 if stored.status == "created" else 200,
                                 headers=headers)

    # -- queries (bearer token) ----------------------------------------------------------

    async def _engineer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization")
        async with self.engine.begin() as conn:
            name = await token_owner(conn, header, _now())
        if name is None:
            raise refuse(401, "unauthorised", "send Authorization: Bearer <token> "
                         "(wipeagent platform token add NAME)")
        return name

    async def _guarded(self, request: web.Request,
                       answer: Callable[[], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        try:
            await self._engineer(request)
            return await answer()
        except IngestRefusal as refusal:
            response = refusal.response
            if response.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="wipeagent platform"'
            return response

    async def _search(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            filters, limit = _filters(request)
            async with self.engine.connect() as conn:
                return web.json_response(await queries.search(conn, filters, limit))
        return await self._guarded(request, answer)

    async def _certificate(self, request: web.Request) -> web.StreamResponse:
        certificate_id = request.match_info["certificate_id"]
        client = client_identity(request, self.settings.client_roots)
        try:
            if client is None:  # a station may read back its own; anyone else needs a token
                await self._engineer(request)
        except IngestRefusal as refusal:
            return refusal.response
        if not CERTIFICATE_ID.match(certificate_id):
            return problem(404, "not_found", "no such certificate")
        async with self.engine.connect() as conn:
            found = await queries.certificate_data(conn, certificate_id)
        if found is None or (client is not None and client.common_name != found[1]):
            return problem(404, "not_found", "no such certificate")
        return web.Response(body=found[0], content_type=MEDIA_TYPE)

    async def _stations(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            async with self.engine.connect() as conn:
                return web.json_response({"stations": await queries.station_list(conn)})
        return await self._guarded(request, answer)

    async def _ledger(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            station_id = request.match_info["station_id"]
            root = request.query.get("root")
            async with self.engine.connect() as conn:
                reports = await queries.ledger_report(conn, station_id, root)
            if not reports:
                return problem(404, "not_found", f"no station {station_id!r}")
            return web.json_response({"ledgers": reports})
        return await self._guarded(request, answer)

    async def _problems(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            kind = request.query.get("kind")
            if kind is not None and kind not in ("fork", "broken_link", "duplicate_id"):
                raise refuse(400, "bad_parameter", "kind: fork, broken_link or duplicate_id")
            async with self.engine.connect() as conn:
                found = await queries.problems(
                    conn, station_id=request.query.get("station"), kind=kind,
                    limit=_int(request.query.get("limit"), 100))
            return web.json_response({"problems": found})
        return await self._guarded(request, answer)

    # -- public -------------------------------------------------------------------------

    def _client_address(self, request: web.Request) -> str:
        if self.settings.behind_proxy:
            forwarded = request.headers.get("X-Forwarded-For", "")
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            if hops:
                return hops[-1]  # added by our own proxy; the ones before it are claims
        return request.remote or "unknown"

    async def _lookup(self, request: web.Request) -> web.StreamResponse:
        wait = self.limiter.check(self._client_address(request))
        if wait > 0:
            response = problem(429, "rate_limited", "too many lookups; try again shortly")
            response.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
            return response
        certificate_id = request.match_info["certificate_id"]
        sha256 = request.match_info["sha256"]
        if not CERTIFICATE_ID.match(certificate_id) or not SHA256_HEX.match(sha256):
            return problem(404, "not_found", "no certificate with this id and hash")
        async with self.engine.connect() as conn:
            found = await queries.public_lookup(conn, certificate_id, sha256)
        if found is None:
            # The same answer whether the id is unknown or the hash is wrong: a lookup
            # tells nothing to someone who does not already hold both.
            return problem(404, "not_found", "no certificate with this id and hash")
        return web.json_response(found, headers={"Cache-Control": "no-store"})

    async def _roots(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._roots_body, content_type="application/json",
                            headers={"Cache-Control": "no-cache"})

    async def _schemas(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._schemas_body, content_type="application/json",
                            headers={"Cache-Control": "no-cache"})

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "verify.html",
                                headers={"Cache-Control": "no-cache"})

    async def _health(self, _request: web.Request) -> web.StreamResponse:
        try:
            async with self.engine.connect() as conn:
                total = (await conn.execute(
                    select(func.coalesce(func.sum(stations.c.certificates), 0)))).scalar()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("health: database unreachable: %s", exc)
            return web.json_response({"ok": False, "database": "unreachable"}, status=503)
        return web.json_response({
            "ok": True, "database": self.engine.dialect.name,
            "certificates": int(total or 0),
        })


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise refuse(400, "bad_parameter", f"not a number: {value!r}")
    return int(value)


def _time(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise refuse(400, "bad_parameter",
                     f"{name}: an RFC 3339 time or a date (2026-11-20)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filters(request: web.Request) -> tuple[queries.Filters, int]:
    q = request.query
    outcome = q.get("outcome")
    if outcome is not None and outcome not in queries.OUTCOMES:
        raise refuse(400, "bad_parameter", f"outcome: one of {', '.join(queries.OUTCOMES)}")
    after = None
    if "cursor" in q:
        at, _, cid = q["cursor"].rpartition("_")
        try:
            after = (datetime.fromisoformat(at.replace("Z", "+00:00")), cid)
        except ValueError as exc:
            raise refuse(400, "bad_parameter", "cursor: use next_cursor as given") from exc
    booking = q.get("booking")
    if booking is not None and not BOOKING_REFERENCE.fullmatch(booking):
        raise refuse(400, "bad_parameter",
                     "booking: a booking reference, 1-100 printable ASCII characters")
    filters = queries.Filters(
        certificate_id=q.get("id"), imei=q.get("imei"), serial=q.get("serial"),
        booking=booking,
        station_id=q.get("station"), root_sha256=q.get("root"), outcome=outcome,
        issued_from=_time(request, "from"), issued_to=_time(request, "to"), after=after)
    return filters, _int(q.get("limit"), 100)
