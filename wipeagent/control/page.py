"""The bench page: the technician's screen, served by the agent over HTTP (aiohttp).

- `GET /` and `/assets/*`: the page (plain HTML, CSS and JavaScript shipped in the
  package; nothing from a CDN, nothing fetched at run time).
- `GET /api/session`: who is signed in in this browser, the CSRF token, the layout.
- `GET /api/events`: the bench as a server-sent event stream (`snapshot` once, then
  `slot` and `header` for each change, coalesced over at most 100 ms).
- `POST /api/...`: the actions (sign in / out, confirm, confirm all, abort, manual step,
  identify, scan, the IMEI of a phone that will not give it, the final reset done),
  checked and journaled by `actions.BenchActions`.
- `GET /api/intake?q=`: the newest bookings on the intake list (signed in); `POST
  /api/intake/remove` takes one off.
- `GET /api/i18n/{lang}`: the message catalogue for the page (wipeagent.i18n).
- `GET /certificates/{id}.pdf`: a certificate's PDF; `{id}.jws.json`: its signed file.

Security (docs/technician-guide.md, docs/api.md):
- Every POST needs the `X-CSRF-Token` header (HMAC of this browser's cookie under a key
  that lives only in this process), an `Origin` equal to the page's own origin, a JSON
  body, and a fresh `X-Request-Id` (a replayed request id is refused).
- The Host header must name the listen address, localhost or a `page.hosts` entry, so a
  DNS-rebinding page cannot talk to the agent.
- On a loopback address the bench can be watched without signing in (a kiosk screen);
  on any other address everything except the sign-in form needs a signed-in operator.
  Actions always need one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from wipeagent import i18n
from wipeagent.config import AgentConfig
from wipeagent.control.actions import Actor
from wipeagent.control.bench import ControlError
from wipeagent.control.server import ControlServer, parse_many
from wipeagent.errors import ConfigError, WipeAgentError

log = logging.getLogger(__name__)

VISIT_COOKIE = "wa_visit"
SESSION_COOKIE = "wa_session"
MAX_BODY = 64 << 10
COALESCE_S = 0.1  # real seconds: several changes in a burst go out as one write
KEEPALIVE_S = 15.0
INTAKE_SHOWN = 200  # bookings listed on the page (newest first; `?q=` finds the others)
_ASSET = re.compile(r"^[a-z0-9-]{1,40}\.(js|css|svg)$")
_CONTENT_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"page.listen: {listen!r} is not HOST:PORT")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _asset(name: str) -> bytes:
    return resources.files("wipeagent.control").joinpath("assets", name).read_bytes()


class BenchPage:
    """The page's HTTP server, beside the control socket's (shares its ControlServer)."""

    def __init__(self, control: ControlServer, config: AgentConfig, *,
                 listen: str | None = None) -> None:
        self.control = control
        self.bench = control.bench
        self.actions = control.actions
        self.config = config
        self.host, self.port = parse_listen(listen or config.page.listen)
        self.loopback = is_loopback(self.host)
        self._key = secrets.token_bytes(32)  # CSRF tokens die with the process
        self.instance = secrets.token_hex(8)  # the page notices an agent restart
        self._seen: OrderedDict[str, None] = OrderedDict()  # request ids (replays)
        self._runner: web.AppRunner | None = None
        self._streams: set[web.StreamResponse] = set()
        self.app = self._make_app()

    # -- life cycle ----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY,
                              middlewares=[self._errors, self._guard])
        r = app.router
        r.add_get("/", self.get_index)
        r.add_get("/assets/{name}", self.get_asset)
        r.add_get("/api/session", self.get_session)
        r.add_get("/api/status", self.get_status)
        r.add_get("/api/events", self.get_events)
        r.add_get("/api/i18n/{lang}", self.get_catalogue)
        r.add_post("/api/login", self.post_login)
        r.add_post("/api/logout", self.post_logout)
        r.add_post("/api/confirm", self.post_confirm_many)
        r.add_post("/api/slots/{slot}/confirm", self.post_confirm)
        r.add_post("/api/slots/{slot}/abort", self.post_abort)
        r.add_post("/api/slots/{slot}/manual-step", self.post_manual_step)
        r.add_post("/api/slots/{slot}/identify", self.post_identify)
        r.add_post("/api/slots/{slot}/imei", self.post_imei)
        r.add_post("/api/slots/{slot}/handoff", self.post_handoff)
        r.add_post("/api/scan", self.post_scan)
        r.add_get("/api/intake", self.get_intake)
        r.add_post("/api/intake/remove", self.post_intake_remove)
        r.add_get("/certificates/{certificate_id}.pdf", self.get_pdf)
        r.add_get("/certificates/{certificate_id}.jws.json", self.get_signed)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot serve the bench page on {self.host}:{self.port}: "
                              f"{exc.strerror}", hint="choose another page.listen") from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("bench page on %s%s", self.url,
                 "" if self.loopback else " (not loopback: every request needs sign-in)")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def close(self) -> None:
        for stream in list(self._streams):
            if stream.task is not None:
                stream.task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares ---------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except ControlError as exc:
            response = _refusal(exc.code, exc.message, exc.hint, exc.status)
        except WipeAgentError as exc:
            response = _refusal(exc.code, exc.message, exc.hint, 503)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("bench page: %s %s failed", request.method, request.path)
            response = _refusal("internal", "internal error", "see the agent log", 500)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _allowed_hosts(self) -> set[str]:
        names = {self.host, "localhost", "127.0.0.1", "::1", *self.config.page.hosts}
        return {n.lower() for n in names}

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Host check on everything; CSRF and replay checks on every POST; sign-in on
        everything but the sign-in form when not on loopback."""
        host = _host_name(request.host)
        if host not in self._allowed_hosts():
            raise ControlError("bad_host", f"this agent is not served as {host!r}",
                               status=421, hint="open the address the agent prints")
        if request.method == "POST":
            await self._check_post(request)
        elif not self.loopback and not _public(request.path):
            self._web_actor(request)  # 401 unless signed in in this browser
        return await handler(request)

    async def _check_post(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        expected = f"{request.scheme}://{request.host}"
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if origin is None or origin != expected or fetch_site not in (None, "same-origin"):
            await self._audit_refusal(request, "bad_origin", origin=origin or "")
            raise ControlError("bad_origin", "request from another site refused",
                               status=403, hint="use the bench page itself")
        token = request.headers.get("X-CSRF-Token", "")
        if not any(hmac.compare_digest(token, valid) for valid in self._csrf_tokens(request)):
            await self._audit_refusal(request, "bad_csrf")
            raise ControlError("bad_csrf", "missing or stale CSRF token", status=403,
                               hint="reload the page")
        request_id = request.headers.get("X-Request-Id", "")
        if not _REQUEST_ID.fullmatch(request_id):
            raise ControlError("bad_request", "X-Request-Id: 16-64 of A-Z a-z 0-9 _ -",
                               status=400)
        if request_id in self._seen:
            await self._audit_refusal(request, "replayed")
            raise ControlError("replayed", "this request was already carried out",
                               status=409, hint="reload the page")
        self._seen[request_id] = None
        while len(self._seen) > 50_000:
            self._seen.popitem(last=False)
        if request.content_type != "application/json":
            raise ControlError("bad_request", "the body is JSON", status=415)

    async def _audit_refusal(self, request: web.Request, code: str, **detail: Any) -> None:
        signin = self.bench.signed_in(request.cookies.get(SESSION_COOKIE))
        await self.control.audit.record(
            "request", "refused", operator=signin.operator if signin else None,
            channel="web", remote=request.remote or "", code=code, path=request.path[:200],
            **detail)

    def _token(self, basis: str) -> str:
        return hmac.new(self._key, basis.encode(), hashlib.sha256).hexdigest()

    def _csrf(self, request: web.Request) -> str:
        """The CSRF token the page gets: bound to this browser's sign-in cookie when
        signed in, else to its visit cookie (both HttpOnly, SameSite=Strict)."""
        session = request.cookies.get(SESSION_COOKIE, "")
        visit = request.cookies.get(VISIT_COOKIE, "")
        if session and self.bench.signed_in(session):
            return self._token(f"s:{session}")
        return self._token(f"v:{visit}") if visit else "-"

    def _csrf_tokens(self, request: web.Request) -> list[str]:
        """Tokens a POST may carry: the sign-in's (even when the sign-in just ended after
        being idle: the request is then refused as not signed in, not as forged) or the
        visit's. Either proves the page read /api/session from this origin."""
        tokens = []
        for name, prefix in ((SESSION_COOKIE, "s:"), (VISIT_COOKIE, "v:")):
            value = request.cookies.get(name)
            if value:
                tokens.append(self._token(prefix + value))
        return tokens

    def _web_actor(self, request: web.Request) -> Actor:
        return self.actions.actor(request.cookies.get(SESSION_COOKIE), channel="web",
                                  remote=request.remote or "")

    # -- the page ------------------------------------------------------------------------

    async def get_index(self, request: web.Request) -> web.Response:
        response = web.Response(body=_asset("index.html"), content_type="text/html",
                                charset="utf-8")
        if not request.cookies.get(VISIT_COOKIE):
            response.set_cookie(VISIT_COOKIE, secrets.token_urlsafe(24), httponly=True,
                                samesite="Strict", path="/")
        return response

    async def get_asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not _ASSET.fullmatch(name):
            raise web.HTTPNotFound()
        try:
            body = _asset(name)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise web.HTTPNotFound() from exc
        return web.Response(body=body, content_type=_CONTENT_TYPES[name.rpartition(".")[2]],
                            charset="utf-8")

    async def get_catalogue(self, request: web.Request) -> web.Response:
        lang = request.match_info["lang"]
        if lang not in i18n.PAGE_LANGUAGES:
            raise ControlError("bad_request", f"languages: {', '.join(i18n.PAGE_LANGUAGES)}",
                               status=404)
        from wipeagent.i18n.messages import all_codes

        _ = i18n.translator(lang)
        codes = {table: {code: _(text) for code, text in entries.items()}
                 for table, entries in all_codes().items()}
        return web.json_response({"lang": lang, "messages": i18n.catalogue(lang),
                                  "codes": codes})

    def _layout(self) -> dict[str, Any]:
        page = self.config.page
        labels = dict(self.config.usb.slots)
        return {"columns": page.columns,
                "positions": {k: list(v) for k, v in page.positions.items()},
                "labels": labels}

    async def get_session(self, request: web.Request) -> web.Response:
        signin = self.bench.signed_in(request.cookies.get(SESSION_COOKIE))
        response = web.json_response({
            "operator": signin.operator if signin else None,
            "csrf": self._csrf(request),
            "instance": self.instance,
            "loopback": self.loopback,
            "language": self.config.page.language,
            "languages": list(i18n.PAGE_LANGUAGES),
            "station_id": self.bench.station_id,
            "policy": self.bench.policy,
            "idle_signout_s": self.bench.signins.idle_s,
            "idle_left_s": self.bench.signins.remaining_s(signin) if signin else None,
            "layout": self._layout(),
        })
        if not request.cookies.get(VISIT_COOKIE):
            response.set_cookie(VISIT_COOKIE, secrets.token_urlsafe(24), httponly=True,
                                samesite="Strict", path="/")
        return response

    async def _snapshot(self) -> dict[str, Any]:
        snapshot = self.bench.snapshot()
        await self.control.with_certificates(snapshot["slots"])
        return snapshot

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(await self._snapshot())

    async def get_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `snapshot`, then `slot` / `header` per change."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", "Content-Security-Policy": CSP})
        await response.prepare(request)
        self._streams.add(response)
        subscription = self.bench.subscribe()
        try:
            snapshot = {**await self._snapshot(), "instance": self.instance}
            await response.write(_sse("snapshot", snapshot, retry_ms=1000))
            while True:
                try:
                    await asyncio.wait_for(subscription.event.wait(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                await asyncio.sleep(COALESCE_S)  # let a burst of changes settle
                slots, header = subscription.take()
                chunks: list[bytes] = []
                entries = [self.bench.slot(s) for s in sorted(slots) if s in self.bench.slots]
                await self.control.with_certificates(entries)
                chunks += [_sse("slot", e) for e in entries]
                if header:
                    chunks.append(_sse("header", self.bench.header()))
                if chunks:
                    await response.write(b"".join(chunks))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.bench.unsubscribe(subscription)
            self._streams.discard(response)
        return response

    async def get_pdf(self, request: web.Request) -> web.Response:
        certificate_id = request.match_info["certificate_id"]
        if not re.fullmatch(r"[0-9a-f-]{36}", certificate_id):
            raise ControlError("no_such_certificate", "not a certificate id", status=404)
        lang = request.query.get("lang")
        response = await self.control.pdf_response(certificate_id, lang)
        if request.query.get("download") != "1":  # open in the browser's viewer to print
            response.headers["Content-Disposition"] = response.headers[
                "Content-Disposition"].replace("attachment", "inline")
        return response

    async def get_signed(self, request: web.Request) -> web.Response:
        """The signed certificate as stored (what the platform ingests and anyone can
        check with `wipeagent verify`), as a download."""
        certificate_id = request.match_info["certificate_id"]
        if not re.fullmatch(r"[0-9a-f-]{36}", certificate_id):
            raise ControlError("no_such_certificate", "not a certificate id", status=404)
        return await self.control.signed_response(certificate_id)

    # -- actions -------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ControlError("bad_request", "the body is not JSON", status=400) from exc
        if not isinstance(body, dict):
            raise ControlError("bad_request", "the body is a JSON object", status=400)
        return body

    async def post_login(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        token, signin = await self.actions.sign_in(body.get("operator"), body.get("secret"),
                                                   channel="web",
                                                   remote=request.remote or "")
        old = request.cookies.get(SESSION_COOKIE)
        if old and old != token:
            self.bench.signins.end(old)
        response = web.json_response({"operator": signin.operator})
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict",
                            path="/")
        return response

    async def post_logout(self, request: web.Request) -> web.Response:
        signin = self.bench.signed_in(request.cookies.get(SESSION_COOKIE))
        if signin is not None:
            await self.actions.sign_out(self._web_actor(request))
        response = web.json_response({"operator": None})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def post_confirm(self, request: web.Request) -> web.Response:
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.confirm(
            actor, request.match_info["slot"], session_id=_str(body, "session_id"),
            serial=_str(body, "serial")))

    async def post_confirm_many(self, request: web.Request) -> web.Response:
        actor = self._web_actor(request)
        return web.json_response(await self.actions.confirm_many(
            actor, *parse_many(await self._body(request))))

    async def post_abort(self, request: web.Request) -> web.Response:
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.abort(
            actor, request.match_info["slot"], session_id=_str(body, "session_id"),
            serial=_str(body, "serial")))

    async def post_manual_step(self, request: web.Request) -> web.Response:
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.manual_step(
            actor, request.match_info["slot"], body.get("step"),
            session_id=_str(body, "session_id")))

    async def post_identify(self, request: web.Request) -> web.Response:
        actor = self._web_actor(request)
        return web.json_response(await self.actions.identify(actor,
                                                             request.match_info["slot"]))

    async def post_imei(self, request: web.Request) -> web.Response:
        """The IMEI(s) typed into the tile of a phone that would not give them."""
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.enter_imeis(
            actor, request.match_info["slot"], body.get("imeis"),
            session_id=_str(body, "session_id"), serial=_str(body, "serial")))

    async def post_handoff(self, request: web.Request) -> web.Response:
        """"Final reset done" (policy.handoff = "final_reset")."""
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.attest_final_reset(
            actor, request.match_info["slot"], session_id=_str(body, "session_id"),
            serial=_str(body, "serial")))

    async def get_intake(self, request: web.Request) -> web.Response:
        """The newest bookings (`?q=`: whose IMEI, serial or reference contains it), for
        a signed-in operator: booking references are the platform's, not the kiosk's."""
        self._web_actor(request)
        query = request.query.get("q", "")[:64]
        entries, total = await self.control.intake.newest(INTAKE_SHOWN, query)
        return web.json_response({"entries": [e.as_dict() for e in entries],
                                  "total": total})

    async def post_intake_remove(self, request: web.Request) -> web.Response:
        """Take a phone off the intake list (`wipeagent intake remove`)."""
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.remove_intake(actor,
                                                                  body.get("identifier")))

    async def post_scan(self, request: web.Request) -> web.Response:
        """A scanned barcode; `slot`: the selected tile (an IMEI answers its phone when
        it waits for one)."""
        actor = self._web_actor(request)
        body = await self._body(request)
        return web.json_response(await self.actions.scan(
            actor, body.get("code"), slot=_str(body, "slot"),
            session_id=_str(body, "session_id")))


def _public(path: str) -> bool:
    """What a browser may fetch before signing in on a non-loopback address."""
    return path in ("/", "/api/session") or path.startswith(("/assets/", "/api/i18n/"))


def _host_name(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        return host[1:host.find("]")]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 128:
        raise ControlError("bad_request", f"{key}: a string", status=400)
    return value


def _refusal(code: str, message: str, hint: str, status: int) -> web.Response:
    return web.json_response({"error": code, "message": message, "hint": hint},
                             status=status)


def _sse(event: str, data: Any, *, retry_ms: int | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n".encode()
