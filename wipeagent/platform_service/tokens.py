"""Bearer tokens for the query API (platform engineers, dashboards, scripts).

    wipeagent platform token add NAME      prints the token once; only its SHA-256 is kept
    Authorization: Bearer wpt_...           on every query request

A token is 256 random bits, so a plain SHA-256 is the right store (as for API tokens on
code-hosting sites): there is no low-entropy secret for a slow hash to protect, and a
lookup by hash is one indexed read. Revoked tokens stop working at the next request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from wipeagent.errors import ConfigError
from wipeagent.platform_service.db import api_tokens

PREFIX = "wpt_"
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_TOKEN = re.compile(r"^wpt_[A-Za-z0-9_-]{43}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # at most one write per token a minute


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


async def add_token(conn: AsyncConnection, name: str, now: datetime) -> str:
    """A new token for `name` (returned once, never stored)."""
    if not _NAME.match(name):
        raise ConfigError(f"token name must be 1-64 of A-Z a-z 0-9 . _ @ -, got {name!r}")
    exists = (await conn.execute(
        select(api_tokens.c.id).where(api_tokens.c.name == name))).first()
    if exists is not None:
        raise ConfigError(f"a token named {name!r} exists",
                          hint="revoke it first, or choose another name")
    token = PREFIX + secrets.token_urlsafe(32)
    await conn.execute(api_tokens.insert().values(
        name=name, token_sha256=_digest(token), created_at=now))
    return token


async def revoke_token(conn: AsyncConnection, name: str, now: datetime) -> bool:
    """Revoke the token `name`; False if there is no such active token."""
    result = await conn.execute(
        update(api_tokens)
        .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now))
    return bool(result.rowcount)


async def list_tokens(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every token's name and dates (never the token)."""
    rows = await conn.execute(select(api_tokens).order_by(api_tokens.c.name))
    return [{"name": r.name, "created_at": r.created_at, "revoked_at": r.revoked_at,
             "last_used_at": r.last_used_at} for r in rows]


async def token_owner(conn: AsyncConnection, header: str | None, now: datetime
                      ) -> str | None:
    """The name behind an `Authorization: Bearer` header, or None (missing, unknown,
    revoked). Records when the token was last used (to the minute)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.match(token):
        return None
    row = (await conn.execute(
        select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.last_used_at)
        .where(api_tokens.c.token_sha256 == _digest(token),
               api_tokens.c.revoked_at.is_(None)))).first()
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        await conn.execute(update(api_tokens).where(api_tokens.c.id == row.id)
                           .values(last_used_at=now))
    name: str = row.name
    return name
