"""A running platform service over SQLite or PostgreSQL, reached over real (mutual) TLS.

Imported by this unique name (pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from fleet import Org, Station

from wipeagent.certs.issue import IssuedCertificate
from wipeagent.clock import Clock
from wipeagent.platform_service.app import PlatformService, PlatformSettings, tls_context
from wipeagent.platform_service.db import database_url, migrate
from wipeagent.platform_service.tokens import add_token
from wipeagent.uplink.ingest import MEDIA_TYPE
from wipeagent.uplink.tls import ensure_dev_server_tls


@dataclass
class Platform:
    """The service under test and how to talk to it."""

    service: PlatformService
    server_ca: Path
    orgs: list[Org]
    token: str

    def station_ssl(self, station: Station) -> ssl.SSLContext:
        return station.client_ssl(self.server_ca)

    def plain_ssl(self) -> ssl.SSLContext:
        """TLS without a client certificate (a browser, an engineer)."""
        return ssl.create_default_context(cafile=str(self.server_ca))

    async def post(self, station: Station | None, data: bytes | IssuedCertificate, *,
                   key: str | None = None) -> tuple[int, dict[str, Any]]:
        """Deliver as `station` (its TLS client certificate; None: no certificate)."""
        if isinstance(data, IssuedCertificate):
            key = key or data.certificate_id
            data = data.data
        headers = {"Content-Type": MEDIA_TYPE, "Idempotency-Key": key or ""}
        context = self.station_ssl(station) if station else self.plain_ssl()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http, \
                http.post(self.service.ingest_url, data=data, headers=headers) as response:
            return response.status, json.loads(await response.read())

    async def get(self, path: str, *, token: str | type[Ellipsis] | None = ...,
                  params: dict[str, str] | None = None) -> tuple[int, Any]:
        """GET on the main listener with the engineer's token (or `token`)."""
        bearer = self.token if token is ... else token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        connector = aiohttp.TCPConnector(ssl=self.plain_ssl())
        async with aiohttp.ClientSession(connector=connector) as http, \
                http.get(self.service.base_url + path, headers=headers,
                         params=params) as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(body)
            return response.status, body

    async def public(self, path: str) -> tuple[int, Any, dict[str, str]]:
        """GET on the public (plain HTTP) listener."""
        async with aiohttp.ClientSession() as http, \
                http.get(self.service.public_base_url + path) as response:
            body = await response.read()
            parsed = json.loads(body) if response.content_type == "application/json" \
                else body
            return response.status, parsed, dict(response.headers)


async def start_platform(root: Path, db_url: str, orgs: list[Org], *,
                         public_burst: int = 30) -> Platform:
    """Migrate the database, start the service (both listeners), make a token."""
    url = database_url(db_url)
    migrate(url)
    server = ensure_dev_server_tls(root / "server-tls")
    context = tls_context(cert=server.cert, key=server.key,
                          client_cas=[o.ca_cert for o in orgs])
    roots = [o.root for o in orgs]
    service = PlatformService(
        PlatformSettings(database=url, trust_roots=roots, client_roots=roots,
                         public_burst=public_burst, public_rate=0.5),
        clock=Clock())
    await service.start(ssl_context=context, public=("127.0.0.1", 0))
    async with service.engine.begin() as conn:
        token = await add_token(conn, "engineer", datetime.now(UTC))
    return Platform(service, server.ca, orgs, token)
