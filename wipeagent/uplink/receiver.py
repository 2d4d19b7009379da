"""A reference receiver for the ingest API (docs/ingest-api.md), for tests and the demo.

A real HTTPS server (aiohttp) on a loopback address. POST /v1/certificates verifies the
body with the project's verifier against the configured trust roots and stores it as
`<certificate_id>.jws` in a directory (so `wipeagent verify DIR/*.jws` works on it):

    201 created | 200 already held (same id, same SHA-256) | 409 same id, other bytes
    400 malformed request / JWS, Idempotency-Key missing or not the certificate id
    403 no TLS client certificate, or one of another station / organisation (issue 10)
    413 too large | 415 wrong media type | 422 a well-formed JWS that fails verification

The request rules are `wipeagent.uplink.ingest`'s, shared with the platform service
(`wipeagent platform serve`), which grows this into a database-backed service.

Storing is atomic and idempotent without a database: the file is written under a
temporary name, fsynced, and hard-linked to its final name; the link fails if the name
exists, so two concurrent uploads of one certificate store it once.

`Faults` lets tests make the receiver misbehave the ways a real platform does: answer an
error status (with Retry-After), be slow, or cut the connection before or after storing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from wipeagent.certs.jws import MAX_CERTIFICATE_BYTES
from wipeagent.certs.verify import verify_certificate
from wipeagent.clock import Clock
from wipeagent.errors import CertificateError
from wipeagent.uplink.ingest import (
    CERTIFICATE_ID,
    MALFORMED_REASONS,
    MEDIA_TYPE,
    PATH,
    IngestRefusal,
    check_client,
    client_identity,
    problem,
    read_upload,
    refusal_for,
    require_client,
    trust_anchor,
)

log = logging.getLogger(__name__)

__all__ = ["MALFORMED_REASONS", "MEDIA_TYPE", "PATH", "Faults", "Receiver"]


@dataclass
class Faults:
    """Misbehaviour to inject, consumed one request at a time (tests only)."""

    # (status, Retry-After or None) answered instead of handling, in order.
    statuses: list[tuple[int, str | None]] = field(default_factory=list)
    # Bench seconds to wait after storing, before answering, one entry per request.
    delays: list[float] = field(default_factory=list)
    cut_before_store: int = 0  # requests whose connection is cut before anything is stored
    cut_after_store: int = 0  # requests stored, then cut before the answer


class _Cut(Exception):
    """The fault injector cut this request's connection."""


class Receiver:
    """The reference ingest endpoint. `await start()`, then POST to `url`.

    `ssl_context` must ask for client certificates (`tls.server_context(client_ca=...)`):
    an upload without one is refused, and so is one whose certificate names another
    station than the wipe certificate. `client_roots` (default: `trust_roots`) are the
    roots client certificates are issued under.
    """

    def __init__(
        self,
        store_dir: Path,
        trust_roots: list[x509.Certificate],
        *,
        ssl_context: Any,
        clock: Clock | None = None,
        faults: Faults | None = None,
        client_roots: list[x509.Certificate] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.trust_roots = trust_roots
        self.client_roots = trust_roots if client_roots is None else client_roots
        self.ssl_context = ssl_context
        self.clock = clock or Clock()
        self.faults = faults or Faults()
        self.created: Counter[str] = Counter()  # certificate id -> times stored (must be 1)
        self.duplicates: Counter[str] = Counter()  # certificate id -> idempotent repeats
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # -- life cycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (body limit: one certificate plus slack)."""
        app = web.Application(client_max_size=MAX_CERTIFICATE_BYTES + 1024)
        app.router.add_post(PATH, self._post)
        app.router.add_get(PATH + "/{certificate_id}", self._get)
        app.router.add_get("/v1/health", self._health)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Receiver:
        """Listen on host:port (0: an ephemeral port, see `.port`)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await self._site.start()
        server = self._site._server  # aiohttp has no public accessor for the bound port
        assert isinstance(server, asyncio.base_events.Server)
        self.host, self.port = server.sockets[0].getsockname()[:2]
        return self

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start(self.host, self.port)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The ingest URL clients POST to."""
        return f"https://{self.host}:{self.port}{PATH}"

    # -- storage --------------------------------------------------------------------------

    def path_for(self, certificate_id: str) -> Path:
        """Where a certificate is kept (the id is validated before it names a file)."""
        if not CERTIFICATE_ID.match(certificate_id):
            raise ValueError("not a certificate id")
        return self.store_dir / f"{certificate_id}.jws"

    def held(self) -> dict[str, bytes]:
        """Every stored certificate, by id."""
        return {p.stem: p.read_bytes() for p in sorted(self.store_dir.glob("*.jws"))}

    def _store(self, certificate_id: str, data: bytes) -> tuple[str, str, datetime]:
        """("created" | "duplicate" | "conflict", sha256 of what is held, when first held)."""
        final = self.path_for(certificate_id)
        digest = hashlib.sha256(data).hexdigest()
        tmp = self.store_dir / f".{certificate_id}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, final)  # atomic; fails if the id is already held
        except FileExistsError:
            held = hashlib.sha256(final.read_bytes()).hexdigest()
            first = datetime.fromtimestamp(final.stat().st_mtime, UTC)
            return ("duplicate" if held == digest else "conflict"), held, first
        finally:
            tmp.unlink()
        fd = os.open(self.store_dir, os.O_RDONLY)
        try:
            os.fsync(fd)  # the new directory entry survives a power cut
        finally:
            os.close(fd)
        return "created", digest, datetime.now(UTC)

    # -- handlers -------------------------------------------------------------------------

    def _cut(self, request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()
        raise _Cut

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        try:
            return await self._handle(request)
        except IngestRefusal as refusal:
            return refusal.response
        except _Cut:
            # The connection is gone; aiohttp needs a response object it cannot send.
            return web.Response(status=500)

    async def _handle(self, request: web.Request) -> web.Response:
        faults = self.faults
        if faults.statuses:
            status, retry_after = faults.statuses.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.json_response({"error": "injected", "message": f"HTTP {status}"},
                                     status=status, headers=headers)
        if faults.cut_before_store > 0:
            faults.cut_before_store -= 1
            self._cut(request)
        client = require_client(client_identity(request, self.client_roots))
        key, data = await read_upload(request)
        loop = asyncio.get_running_loop()
        try:
            verified = await loop.run_in_executor(
                None, lambda: verify_certificate(data, trust_roots=self.trust_roots))
        except CertificateError as exc:
            raise refusal_for(exc) from exc
        if verified.certificate_id != key:
            return problem(400, "idempotency_key",
                           "Idempotency-Key is not the certificate's id")
        check_client(client, verified, trust_anchor(verified.chain, self.trust_roots))
        result, held, first = await loop.run_in_executor(None, self._store, key, data)
        if result == "conflict":
            log.error("certificate %s sent again with different content", key)
            return problem(409, "conflict", "a different certificate with this id is held",
                           sha256=held)
        if result == "created":
            self.created[key] += 1
        else:
            self.duplicates[key] += 1
        if faults.cut_after_store > 0:
            faults.cut_after_store -= 1
            self._cut(request)
        if faults.delays:
            await self.clock.sleep(faults.delays.pop(0))
        receipt = {
            "certificate_id": key,
            "sha256": held,
            "status": "created" if result == "created" else "already_held",
            "received_at": first.isoformat(timespec="seconds"),
        }
        headers = {"Location": f"{PATH}/{key}"}
        return web.json_response(receipt, status=201 if result == "created" else 200,
                                 headers=headers)

    async def _get(self, request: web.Request) -> web.Response:
        certificate_id = request.match_info["certificate_id"]
        try:
            path = self.path_for(certificate_id)
        except ValueError:
            return problem(404, "not_found", "no such certificate")
        if not path.exists():
            return problem(404, "not_found", "no such certificate")
        return web.Response(body=path.read_bytes(), content_type=MEDIA_TYPE)

    async def _health(self, _request: web.Request) -> web.Response:
        count = sum(1 for _ in self.store_dir.glob("*.jws"))
        return web.Response(text=json.dumps({"ok": True, "certificates": count}),
                            content_type="application/json")
