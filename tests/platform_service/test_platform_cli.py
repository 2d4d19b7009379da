"""`wipeagent platform migrate | token | serve` as processes, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
from fleet import Org

from wipeagent.platform_service.db import head_revision
from wipeagent.uplink.ingest import MEDIA_TYPE

CLI = [sys.executable, "-m", "wipeagent.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True,
                          timeout=60)


async def test_serve_migrate_and_tokens(tmp_path: Path, db_url: str, acme: Org) -> None:
    migrated = run("platform", "migrate", "--database", db_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"empty -> {head_revision()}" in migrated.stdout
    added = run("platform", "token", "add", "alice", "--database", db_url)
    assert added.returncode == 0, added.stderr
    token = added.stdout.split()[0]
    assert re.fullmatch(r"wpt_[A-Za-z0-9_-]{43}", token)
    assert run("platform", "token", "add", "alice", "--database", db_url).returncode == 2
    listed = run("platform", "token", "list", "--database", db_url)
    assert "alice" in listed.stdout and "active" in listed.stdout and token not in listed.stdout

    proc = await asyncio.create_subprocess_exec(
        *CLI, "platform", "serve", "--database", db_url, "--listen", "127.0.0.1:0",
        "--public-listen", "127.0.0.1:0", "--trust", str(acme.ca_cert),
        "--tls-dir", str(tmp_path / "tls"), stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            first = (await proc.stdout.readline()).decode()
            assert "clients trust" in first
            line = (await proc.stdout.readline()).decode()
        ingest = re.search(r"ingest (\S+);", line)
        page = re.search(r"verification page (\S+);", line)
        assert ingest and page, line
        bench = acme.station("bench-01")
        cert = bench.issue()
        context = bench.client_ssl(tmp_path / "tls" / "platform-ca.pem")
        headers = {"Content-Type": MEDIA_TYPE, "Idempotency-Key": cert.certificate_id}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http, \
                http.post(ingest[1], data=cert.data, headers=headers) as response:
            assert response.status == 201
        engineer = ssl.create_default_context(cafile=str(tmp_path / "tls" / "platform-ca.pem"))
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=engineer)) as http, \
                http.get(ingest[1], params={"serial": cert.payload["device"]["serial"]},
                         headers={"Authorization": f"Bearer {token}"}) as response:
            found = json.loads(await response.read())
            assert [c["certificate_id"] for c in found["certificates"]] == [
                cert.certificate_id]
        async with aiohttp.ClientSession() as http, http.get(page[1]) as response:
            assert response.status == 200 and page[1].startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    revoked = run("platform", "token", "revoke", "alice", "--database", db_url)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
