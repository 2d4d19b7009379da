"""The control API: aiohttp on a unix socket, beside the Agent.

Access control is the socket file: mode 0660, group `control.group` (when that group
exists), in a directory the service owns. Anyone who can open the socket is a technician
of this bench; what they do is attributed to the operator signed in with POST /login.
The routes and bodies are described in docs/api.md and docs/openapi-control.yaml.

Request bodies are bounded (64 KiB, 1 MiB for intake lists), every identifier taken from
a URL is validated before it reaches the store, and PDFs are rendered (CPU-bound) in one
worker thread so the event loop never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import re
import shutil
import socket
import stat
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from wipeagent.certify import certificate_filename
from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.signer import load_certificates
from wipeagent.certs.verify import verify_certificate
from wipeagent.config import AgentConfig
from wipeagent.control.actions import Actor, BenchActions
from wipeagent.control.audit import AuditLog
from wipeagent.control.bench import BenchState, ControlError
from wipeagent.control.desk import BenchTechnician
from wipeagent.control.intake import IntakeList, parse_entry
from wipeagent.control.operators import SOCKET_CHANNEL, OperatorRegistry
from wipeagent.errors import CertificateError, ConfigError, WipeAgentError
from wipeagent.store import CertificateRow, Store
from wipeagent.uplink.alerts import DeliveryStatus, outbox_status

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
MAX_BODY = 1 << 20
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SLOT = re.compile(r"^[\x21-\x7e]{1,128}$")
MetricsProvider = Callable[[], str]
DeliveryProvider = Callable[[], Awaitable[DeliveryStatus]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def trust_roots_for(config: AgentConfig) -> list[x509.Certificate]:
    """Roots to verify this station's own certificates before rendering a PDF: the
    development root when the agent runs on the development PKI, else the last (root)
    certificate of the station chain when the chain includes it. Empty: no PDFs."""
    cc = config.certificates
    if not (cc.key or cc.chain):
        dev = config.state_path / "dev-pki"
        with contextlib.suppress(OSError, ConfigError, IndexError):
            return [dev_trust_root(dev)]
        return []
    with contextlib.suppress(OSError, ConfigError):
        chain = load_certificates(Path(cc.chain))
        if chain and chain[-1].issuer == chain[-1].subject:
            return [chain[-1]]
    return []


def _listening(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket at `path` (a stale socket
    file left by a killed agent refuses them)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _error(exc: WipeAgentError, status: int) -> web.Response:
    return web.json_response({"error": exc.code, "message": exc.message, "hint": exc.hint},
                             status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON {error, message, hint}; never a stack trace on the socket."""
    try:
        return await handler(request)
    except ControlError as exc:
        return _error(exc, exc.status)
    except CertificateError as exc:
        return _error(exc, 500)
    except WipeAgentError as exc:
        return _error(exc, 503)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("control API: %s %s failed", request.method, request.path)
        return web.json_response({"error": "internal", "message": "internal error",
                                  "hint": "see the agent log"}, status=500)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError("bad_request", "the body is not JSON", status=400) from exc
    if not isinstance(body, dict):
        raise ControlError("bad_request", "the body is a JSON object", status=400)
    return body


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _SLOT.fullmatch(value):
        raise ControlError("bad_request", f"{key}: a short printable string", status=400)
    return value


def _slot(request: web.Request) -> str:
    slot = request.match_info["slot"]
    if not _SLOT.fullmatch(slot):
        raise ControlError("no_such_slot", "not a slot name", status=404)
    return slot


def _certificate_id(request: web.Request) -> str:
    value = request.match_info["certificate_id"]
    if not _UUID.fullmatch(value):
        raise ControlError("no_such_certificate", "not a certificate id", status=404)
    return value


class ControlServer:
    """The control API for one bench; `start()` beside the Agent, `close()` at shutdown."""

    def __init__(
        self,
        bench: BenchState,
        store: Store,
        config: AgentConfig,
        *,
        socket_path: Path | None = None,
        group: str | None = None,
        trust_roots: list[x509.Certificate] | None = None,
        metrics: MetricsProvider | None = None,
        delivery: DeliveryProvider | None = None,
        technician: BenchTechnician | None = None,
    ) -> None:
        self.bench = bench
        self.store = store
        self.config = config
        self.socket_path = Path(socket_path or config.control.socket)
        self.group = config.control.group if group is None else group
        self.trust_roots = trust_roots
        self.metrics = metrics
        # The outbox and its alerts for GET /status: the uplink's own view when it runs.
        self.delivery = delivery or (lambda: outbox_status(
            store, configured=bool(config.uplink.url),
            alert_after_failures=config.uplink.alert_after_failures))
        self.intake = IntakeList(store)
        self.technician = technician or BenchTechnician(
            bench, self.intake, bench.clock, imei_timeout_s=config.control.imei_timeout_s,
            final_reset_timeout_s=config.control.final_reset_timeout_s)
        self.audit = AuditLog(store)
        self.registry = OperatorRegistry.for_state_dir(config.state_path)
        self.actions = BenchActions(bench, self.intake, self.audit, self.registry, bench.clock,
                                    self.technician)
        self._expiry: asyncio.Task[None] | None = None
        self._pdf_executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="wipeagent-pdf")
        self._runner: web.AppRunner | None = None
        self._bound = False  # only a socket this server bound is removed at close
        self._bound_inode: tuple[int, int] | None = None
        self.app = self._make_app()

    # -- life cycle ----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors])
        r = app.router
        r.add_get("/status", self.get_status)
        r.add_get("/slots/{slot}", self.get_slot)
        r.add_post("/slots/{slot}/confirm", self.post_confirm)
        r.add_post("/slots/{slot}/abort", self.post_abort)
        r.add_post("/slots/{slot}/reverify", self.post_reverify)
        r.add_post("/slots/{slot}/imei", self.post_imei)
        r.add_post("/slots/{slot}/handoff", self.post_handoff)
        r.add_post("/slots/{slot}/manual-step", self.post_manual_step)
        r.add_post("/slots/{slot}/identify", self.post_identify)
        r.add_post("/confirm", self.post_confirm_many)
        r.add_post("/login", self.post_login)
        r.add_post("/logout", self.post_logout)
        r.add_get("/certificates", self.get_certificates)
        r.add_get("/certificates/{certificate_id}", self.get_certificate)
        r.add_get("/certificates/{certificate_id}/pdf", self.get_certificate_pdf)
        r.add_get("/sessions/{session_id}/certificate", self.get_session_certificate)
        r.add_get("/intake", self.get_intake)
        r.add_post("/intake", self.post_intake)
        r.add_delete("/intake/{identifier}", self.delete_intake)
        r.add_post("/intake/scan", self.post_intake_scan)
        r.add_get("/audit", self.get_audit)
        r.add_get("/metrics", self.get_metrics)
        return app

    def _bind(self) -> socket.socket:
        """Bind the socket and set its mode and group *before* listening, so there is no
        moment when a process outside the group could connect."""
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ConfigError(f"{path} exists and is not a socket",
                                  hint="choose another control.socket path")
            if _listening(path):
                # Another agent (with another state directory) answers there: taking the
                # path over would leave it running and unreachable.
                raise ConfigError(f"control socket {path} is in use by another agent",
                                  hint="stop the other agent, or give this one its own "
                                       "control.socket")
            path.unlink()  # a stale socket from a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            self._bound = True
            st = path.lstat()
            self._bound_inode = (st.st_dev, st.st_ino)
            os.chmod(path, SOCKET_MODE)
            if self.group:
                try:
                    grp.getgrnam(self.group)
                except KeyError:
                    log.warning("group %s does not exist: control socket %s keeps group %d",
                                self.group, path, os.getgid())
                else:
                    shutil.chown(path, group=self.group)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        """Listen on the unix socket."""
        if self.trust_roots is None:
            self.trust_roots = trust_roots_for(self.config)
        try:
            sock = self._bind()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.socket_path}: {exc.strerror}",
                              hint="check control.socket and the directory's owner") from exc
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_idle(),
                                                              name="control-idle")
        log.info("control API on %s", self.socket_path)

    async def _expire_idle(self) -> None:
        """Sign idle operators out (and journal it) even when nobody asks."""
        while True:
            await self.bench.clock.sleep(min(30.0, self.bench.signins.idle_s / 4))
            await self.actions.expire_idle()

    async def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._bound:
            self._bound = False
            with contextlib.suppress(FileNotFoundError):
                st = self.socket_path.lstat()
                # Only our own socket: never one another agent bound at this path since.
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._bound_inode:
                    self.socket_path.unlink()
        self._pdf_executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- bench ---------------------------------------------------------------------------

    async def with_certificates(self, slots: list[dict[str, Any]]) -> None:
        """Fill `certificate_id` of finished slots (looked up once, then remembered)."""
        for entry in slots:
            if entry["certificate_id"] or not (entry["outcome"] and entry["session_id"]):
                continue
            row = await self.store.certificate_for(entry["session_id"])
            if row is not None:
                entry["certificate_id"] = row.certificate_id
                state = self.bench.slots.get(entry["slot"])
                if state is not None and state.session_id == entry["session_id"]:
                    state.certificate_id = row.certificate_id

    def _actor(self) -> Actor:
        return self.actions.actor(SOCKET_CHANNEL, channel=SOCKET_CHANNEL, remote="socket")

    async def get_status(self, request: web.Request) -> web.Response:
        """GET /status: the bench, every slot with phone, step, progress and outcome."""
        snapshot = self.bench.snapshot()
        await self.with_certificates(snapshot["slots"])
        try:
            snapshot["delivery"] = (await self.delivery()).as_dict()
        except WipeAgentError as exc:  # a journal that cannot answer must not hide the bench
            snapshot["delivery"] = {"error": str(exc), "alerts": []}
        return web.json_response(snapshot)

    async def get_slot(self, request: web.Request) -> web.Response:
        entry = self.bench.slot(_slot(request))
        await self.with_certificates([entry])
        return web.json_response(entry)

    async def post_login(self, request: web.Request) -> web.Response:
        """POST /login {"operator", "secret"}: sign in at this bench (the CLI's sign-in)."""
        body = await _json_body(request)
        _, signin = await self.actions.sign_in(body.get("operator"), body.get("secret"),
                                               channel=SOCKET_CHANNEL, remote="socket")
        log.warning("operator %s signed in", signin.operator)
        return web.json_response({"operator": signin.operator,
                                  "signed_in_at": signin.signed_in_at,
                                  "idle_signout_s": self.bench.signins.idle_s})

    async def post_logout(self, request: web.Request) -> web.Response:
        signin = self.bench.signed_in(SOCKET_CHANNEL)
        if signin is not None:
            await self.actions.sign_out(Actor(signin, SOCKET_CHANNEL, "socket",
                                              SOCKET_CHANNEL))
        return web.json_response({"operator": None})

    async def post_confirm(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(await self.actions.confirm(
            self._actor(), _slot(request), session_id=_optional_str(body, "session_id"),
            serial=_optional_str(body, "serial")))

    async def post_confirm_many(self, request: web.Request) -> web.Response:
        """POST /confirm {"slots": [...], "expected": {slot: {session_id, serial}}} or
        {"all": true}: confirm several phones; each is answered on its own."""
        body = await _json_body(request)
        return web.json_response(await self.actions.confirm_many(
            self._actor(), *parse_many(body)))

    async def post_abort(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(await self.actions.abort(
            self._actor(), _slot(request), session_id=_optional_str(body, "session_id"),
            serial=_optional_str(body, "serial")))

    async def post_manual_step(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(await self.actions.manual_step(
            self._actor(), _slot(request), body.get("step"),
            session_id=_optional_str(body, "session_id")))

    async def post_identify(self, request: web.Request) -> web.Response:
        return web.json_response(await self.actions.identify(self._actor(), _slot(request)))

    async def post_intake_scan(self, request: web.Request) -> web.Response:
        """POST /intake/scan {"code", "slot"?, "session_id"?}: a scanned barcode."""
        body = await _json_body(request)
        return web.json_response(await self.actions.scan(
            self._actor(), body.get("code"), slot=_optional_str(body, "slot"),
            session_id=_optional_str(body, "session_id")))

    async def get_audit(self, request: web.Request) -> web.Response:
        """GET /audit?limit=N&action=A: the newest entries of the audit trail."""
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 5000:
            raise ControlError("bad_request", "limit: 1..5000", status=400)
        action = request.query.get("action")
        entries = await self.audit.entries(limit, action)
        return web.json_response({"entries": [e.as_dict() for e in entries]})

    async def post_imei(self, request: web.Request) -> web.Response:
        """POST /slots/{slot}/imei {"imeis": [...]}: the IMEI(s) of a phone that would not
        give them (scanned or typed by the signed-in operator; [] for none)."""
        body = await _json_body(request)
        return web.json_response(await self.actions.enter_imeis(
            self._actor(), _slot(request), body.get("imeis"),
            session_id=_optional_str(body, "session_id"),
            serial=_optional_str(body, "serial")))

    async def post_handoff(self, request: web.Request) -> web.Response:
        """POST /slots/{slot}/handoff: the signed-in operator attests the final reset
        (policy.handoff = "final_reset") of the phone on the slot."""
        body = await _json_body(request)
        return web.json_response(await self.actions.attest_final_reset(
            self._actor(), _slot(request), session_id=_optional_str(body, "session_id"),
            serial=_optional_str(body, "serial")))

    async def post_reverify(self, request: web.Request) -> web.Response:
        """Re-running verification inside a finished session is refused on purpose (see
        docs/api.md): a session has exactly one signed certificate, and new evidence
        belongs to a new session, which the phone gets by being plugged in again."""
        entry = self.bench.slot(_slot(request))
        if entry["running"]:
            raise ControlError("session_running",
                               f"the session on {entry['slot']} is still running",
                               hint="wait for it to finish")
        raise ControlError(
            "reverify_not_in_place",
            "a finished session is not verified again in place: its certificate is final",
            hint="unplug the phone and plug it in again; a new session identifies it, "
                 "erases it again and verifies it, and issues a new certificate",
            status=409)

    # -- certificates --------------------------------------------------------------------

    async def _row(self, certificate_id: str) -> CertificateRow:
        def read(db: Any) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = db.execute(
                "SELECT session_id FROM certificates WHERE certificate_id = ?",
                (certificate_id,)).fetchone()
            return row

        found = await self.store.run(read)
        row = await self.store.certificate_for(found[0]) if found else None
        if row is None:
            raise ControlError("no_such_certificate", f"no certificate {certificate_id}",
                               status=404)
        return row

    async def get_certificates(self, request: web.Request) -> web.Response:
        """GET /certificates?limit=N: the newest N (default 50, at most 1000)."""
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            raise ControlError("bad_request", "limit: 1..1000", status=400)
        rows = await self.store.certificates()
        rows.sort(key=lambda r: r.created_at, reverse=True)
        return web.json_response({"certificates": [{
            "certificate_id": r.certificate_id, "session_id": r.session_id,
            "station_id": r.station_id, "sequence": r.sequence, "outcome": r.outcome,
            "sha256": r.sha256, "created_at": r.created_at,
        } for r in rows[:limit]]})

    def _file_response(self, row: CertificateRow) -> web.Response:
        return web.Response(
            body=row.data, content_type="application/jose+json",
            headers={"Content-Disposition":
                     f'attachment; filename="{certificate_filename(row)}"'})

    async def get_certificate(self, request: web.Request) -> web.Response:
        """GET /certificates/{id}: the signed certificate exactly as stored."""
        return self._file_response(await self._row(_certificate_id(request)))

    async def signed_response(self, certificate_id: str) -> web.Response:
        """A certificate's signed file exactly as stored (the bench page's download)."""
        return self._file_response(await self._row(certificate_id))

    async def get_session_certificate(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        if not _UUID.fullmatch(session_id):
            raise ControlError("no_such_session", "not a session id", status=404)
        row = await self.store.certificate_for(session_id)
        if row is None:
            raise ControlError("no_such_certificate",
                               f"session {session_id} has no certificate (yet)", status=404)
        return self._file_response(row)

    async def get_certificate_pdf(self, request: web.Request) -> web.Response:
        """GET /certificates/{id}/pdf?lang=en|zh: rendered from the *verified* certificate."""
        return await self.pdf_response(_certificate_id(request),
                                       request.query.get("lang"))

    async def pdf_response(self, certificate_id: str, lang: str | None) -> web.Response:
        """A certificate's PDF (language: `lang`, else certificates.language)."""
        row = await self._row(certificate_id)
        lang = lang or self.config.certificates.language
        if lang not in ("en", "zh"):
            raise ControlError("bad_request", "lang: en or zh", status=400)
        if not self.trust_roots:
            raise ControlError("no_trust_root",
                               "no trust root to verify certificates with, so no PDF",
                               status=503, hint="put the root CA at the end of "
                               "certificates.chain, or use `wipeagent verify --pdf`")
        roots, url = self.trust_roots, self.config.certificates.verification_url

        def render() -> bytes:
            from wipeagent.certs.pdf import render_pdf  # reportlab: only when asked

            verified = verify_certificate(row.data, trust_roots=roots)
            return render_pdf(verified, language=lang, verification_url=url)

        pdf = await asyncio.get_running_loop().run_in_executor(self._pdf_executor, render)
        name = f"{row.certificate_id}.{lang}.pdf"
        return web.Response(body=pdf, content_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # -- intake --------------------------------------------------------------------------

    async def get_intake(self, request: web.Request) -> web.Response:
        entries = await self.intake.entries()
        return web.json_response({"entries": [e.as_dict() for e in entries]})

    async def post_intake(self, request: web.Request) -> web.Response:
        """POST /intake {"entries": [{"serial"|"imei": ..., "reference"?: ...}, ...]}."""
        body = await _json_body(request)
        raw = body.get("entries")
        if not isinstance(raw, list):
            raise ControlError("bad_intake", 'the body is {"entries": [...]}', status=400)
        source = body.get("source", "api")
        if not isinstance(source, str) or not re.fullmatch(r"[a-z0-9_.-]{1,32}", source):
            raise ControlError("bad_intake", "source: 1-32 of a-z 0-9 _ . -", status=400)
        signin = self.bench.signed_in(SOCKET_CHANNEL, touch=True)
        added_by = signin.operator if signin else None
        entries = [parse_entry(e, source=source, added_by=added_by) for e in raw]
        if body.get("replace") is True:
            count = await self.intake.replace_source(source, entries)
        else:
            count = await self.intake.add(entries)
        self.bench.intake_added()
        await self.audit.record("intake_add", "ok", operator=added_by, channel=SOCKET_CHANNEL,
                                remote="socket", source=source, count=count,
                                replace=body.get("replace") is True)
        return web.json_response({"added": count})

    async def delete_intake(self, request: web.Request) -> web.Response:
        """DELETE /intake/{identifier}: the signed-in operator takes a phone off the list."""
        return web.json_response(await self.actions.remove_intake(
            self._actor(), request.match_info["identifier"]))

    # -- metrics -------------------------------------------------------------------------

    async def get_metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            raise ControlError("no_metrics", "metrics are not enabled", status=404)
        text = self.metrics()
        # The Prometheus text exposition format's content type.
        return web.Response(body=text.encode("utf-8"), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def parse_many(body: dict[str, Any]) -> tuple[list[str] | None,
                                              dict[str, dict[str, str]]]:
    """The slots (None: all waiting) and expected phones of a confirm-many body."""
    if body.get("all") is True:
        slots = None
    else:
        raw = body.get("slots")
        if not isinstance(raw, list) or not raw or len(raw) > 1024 or not all(
                isinstance(s, str) and _SLOT.fullmatch(s) for s in raw):
            raise ControlError("bad_request", 'give "slots": [SLOT, ...] or "all": true',
                               status=400)
        slots = list(dict.fromkeys(raw))
    expected: dict[str, dict[str, str]] = {}
    raw_expected = body.get("expected") or {}
    if not isinstance(raw_expected, dict) or len(raw_expected) > 1024:
        raise ControlError("bad_request", "expected: {slot: {session_id, serial}}",
                           status=400)
    for slot, seen in raw_expected.items():
        if not isinstance(seen, dict):
            raise ControlError("bad_request", "expected: {slot: {session_id, serial}}",
                               status=400)
        expected[str(slot)] = {k: v for k in ("session_id", "serial")
                               if (v := _optional_str(seen, k)) is not None}
    return slots, expected


def dumps(value: Any) -> str:
    """JSON as the API writes it (for the CLI's --json)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
