"""The bench page's server side, over real HTTP: sign-in with a PIN, CSRF (token + Origin),
replays, DNS-rebinding Host names, what a non-loopback address requires, idle sign-out,
the sign-in throttle, and the audit trail of it all."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, ControlConfig
from wipeagent.control.bench import BenchState
from wipeagent.control.operators import OperatorRegistry
from wipeagent.control.page import BenchPage, is_loopback
from wipeagent.control.server import ControlServer
from wipeagent.session import SessionEvent
from wipeagent.store import Store

PIN = "482913"


class Browser:
    """An HTTP client that behaves like the page (cookies, CSRF header, request ids)."""

    def __init__(self, page: BenchPage, session: aiohttp.ClientSession) -> None:
        self.base = page.url.rstrip("/")
        self.session = session
        self.csrf = "-"

    async def open(self) -> dict[str, Any]:
        async with self.session.get(self.base + "/") as r:
            assert r.status == 200
        async with self.session.get(self.base + "/api/session") as r:
            data: dict[str, Any] = await r.json()
        self.csrf = data["csrf"]
        return data

    async def post(self, path: str, body: Any = None, *, origin: str | None = "self",
                   csrf: str | None = "self", request_id: str | None = None,
                   host: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"X-Request-Id": request_id or secrets.token_urlsafe(18)}
        if origin is not None:
            headers["Origin"] = self.base if origin == "self" else origin
        if csrf is not None:
            headers["X-CSRF-Token"] = self.csrf if csrf == "self" else csrf
        if host is not None:
            headers["Host"] = host
        async with self.session.post(self.base + path, json=body or {}, headers=headers) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> int:
        async with self.session.get(self.base + path) as r:
            return r.status

    async def login(self, name: str = "j.smith", secret: str = PIN) -> tuple[int, dict[str, Any]]:
        status, body = await self.post("/api/login", {"operator": name, "secret": secret})
        if status == 200:
            await self.open()  # the CSRF token now belongs to the sign-in
        return status, body


@asynccontextmanager
async def bench_page(tmp_path: Path, *, loopback: bool = True, idle_s: float = 900.0
                     ) -> AsyncIterator[tuple[BenchPage, BenchState, Browser]]:
    clock = Clock(50)
    with tempfile.TemporaryDirectory(prefix="wap-") as short:
        config = AgentConfig(state_dir=str(tmp_path / "state"),
                             control=ControlConfig(socket=f"{short}/control.sock", group="",
                                                   idle_signout_s=idle_s))
        OperatorRegistry.for_state_dir(config.state_path).add("j.smith", PIN)
        bench = BenchState(clock, station_id="bench-9", idle_signout_s=idle_s)
        async with Store(tmp_path / "journal.sqlite3") as store:
            server = ControlServer(bench, store, config, trust_roots=[])
            async with server:
                page = BenchPage(server, config, listen="127.0.0.1:0")
                await page.start()
                # The address decides it in production (is_loopback); here the same server
                # on 127.0.0.1 plays a bench page served on the shop floor's network.
                page.loopback = loopback
                try:
                    async with aiohttp.ClientSession(
                            cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                        yield page, bench, Browser(page, http)
                finally:
                    await page.close()


async def _audit(page: BenchPage, action: str) -> list[dict[str, Any]]:
    return [e.as_dict() for e in await page.control.audit.entries(100, action)]


async def test_forged_and_replayed_requests_are_refused(tmp_path: Path) -> None:
    async with bench_page(tmp_path) as (page, bench, browser):
        await browser.open()
        # No CSRF token, a wrong one, another site's Origin, no Origin at all: refused.
        assert (await browser.post("/api/login", {"operator": "j.smith", "secret": PIN},
                                   csrf=None))[0] == 403
        assert (await browser.post("/api/login", {"operator": "j.smith", "secret": PIN},
                                   csrf="0" * 64))[1]["error"] == "bad_csrf"
        status, body = await browser.post("/api/login", {"operator": "j.smith", "secret": PIN},
                                          origin="http://evil.example")
        assert (status, body["error"]) == (403, "bad_origin")
        assert (await browser.post("/api/login", {"operator": "j.smith", "secret": PIN},
                                   origin=None))[1]["error"] == "bad_origin"
        # A DNS-rebinding page reaches the agent under its own host name: refused.
        status, body = await browser.post("/api/login", {"operator": "j.smith", "secret": PIN},
                                          host="evil.example:8470",
                                          origin="http://evil.example:8470")
        assert (status, body["error"]) == (421, "bad_host")
        assert bench.operator is None
        refusals = await _audit(page, "request")
        assert {e["detail"]["code"] for e in refusals} >= {"bad_csrf", "bad_origin"}

        # An action without a sign-in is refused even with a valid token.
        bench.request_confirmation("usb:1-2", "sess-1", "SER1")
        status, body = await browser.post("/api/slots/usb%3A1-2/confirm", {})
        assert (status, body["error"]) == (401, "not_signed_in")
        assert (await browser.login())[0] == 200
        request_id = secrets.token_urlsafe(18)
        status, body = await browser.post("/api/slots/usb%3A1-2/confirm", {},
                                          request_id=request_id)
        assert (status, body["confirmed_by"]) == (200, "j.smith")
        # The same request again (a replay) is refused, even with valid cookies and token.
        bench.request_confirmation("usb:1-2", "sess-2", "SER1")
        status, body = await browser.post("/api/slots/usb%3A1-2/confirm", {},
                                          request_id=request_id)
        assert (status, body["error"]) == (409, "replayed")
        assert not bench.pending["usb:1-2"].answer.done()
        # Signed out, the old token and cookie are worthless.
        old_token = browser.csrf
        await browser.post("/api/logout", {})
        status, _ = await browser.post("/api/slots/usb%3A1-2/abort", {}, csrf=old_token)
        assert status == 403
        confirms = await _audit(page, "confirm")
        assert [(e["operator"], e["result"], e["channel"]) for e in confirms] == [
            ("j.smith", "ok", "web")]


async def test_non_loopback_needs_a_sign_in_for_everything(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.168.10.20") and not is_loopback("0.0.0.0")
    async with bench_page(tmp_path, loopback=False) as (_page, bench, browser):
        bench.observe(SessionEvent("usb:1-2", "s1", "connect", "connecting"))
        session = await browser.open()  # the sign-in form itself is public
        assert session["loopback"] is False and session["operator"] is None
        assert await browser.get("/assets/app.js") == 200
        assert await browser.get("/api/i18n/zh-CN") == 200
        for path in ("/api/status", "/api/events", "/certificates/"
                     "0190d6a4-0000-7000-8000-000000000000.pdf"):
            assert await browser.get(path) == 401, path
        assert (await browser.login())[0] == 200
        assert await browser.get("/api/status") == 200


async def test_loopback_kiosk_shows_the_bench_but_acts_only_signed_in(tmp_path: Path) -> None:
    async with bench_page(tmp_path) as (_page, bench, browser):
        bench.observe(SessionEvent("usb:1-2", "s1", "connect", "connecting"))
        await browser.open()
        assert await browser.get("/api/status") == 200
        for path in ("/api/confirm", "/api/slots/usb%3A1-2/identify", "/api/scan"):
            status, body = await browser.post(path, {"all": True, "code": "490154203237518"})
            assert (status, body["error"]) == (401, "not_signed_in"), path


async def test_idle_sign_out_and_throttled_guessing(tmp_path: Path) -> None:
    async with bench_page(tmp_path, idle_s=60) as (page, bench, browser):
        await browser.open()
        for _ in range(5):
            status, body = await browser.login(secret="000000")
            assert (status, body["error"]) == (401, "bad_credentials")
        # The sixth try is refused before the PIN is even looked at, right PIN or not.
        status, body = await browser.login()
        assert (status, body["error"]) == (429, "too_many_attempts")
        attempts = await _audit(page, "sign_in")
        assert [e["result"] for e in attempts] == ["throttled"] + ["refused"] * 5
        assert all(e["operator"] == "j.smith" for e in attempts)

        page.actions.throttle.succeeded("operator:j.smith", "client:web:127.0.0.1")
        assert (await browser.login())[0] == 200
        assert bench.operator == "j.smith"
        await bench.clock.sleep(61)  # idle longer than control.idle_signout_s
        status, body = await browser.post("/api/scan", {"code": "490154203237518"})
        assert (status, body.get("error")) == (401, "not_signed_in"), body
        assert bench.operator is None
