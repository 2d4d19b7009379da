"""A client for the control API over its unix socket.

HTTP/1.1 through the standard library's http.client on an AF_UNIX socket, one request a
connection, run in a worker thread so the API stays async: the technician's commands
(`wipeagent status` ...) start in a fraction of the time importing aiohttp would take
(docs/benchmarks.md, CLI start-up), and need none of the bench's extra dependencies.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

from wipeagent.clock import REAL_TIME, Clock

# ControlApiError lives in wipeagent.errors; importable from here too.
from wipeagent.errors import ControlApiError as ControlApiError  # noqa: PLC0414 - re-export

DEFAULT_SOCKET = "/run/wipeagent/control.sock"
MAX_RESPONSE = 16 << 20  # a PDF or a long status; anything larger is refused


class _UnixConnection(http.client.HTTPConnection):
    """http.client's connection, on a unix socket instead of TCP."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("wipeagent", timeout=timeout)
        self._unix_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _exchange(path: Path, timeout: float, method: str, target: str,
              body: bytes | None) -> tuple[int, str, bytes]:
    """One request on a fresh connection: (status, content type, body), bounded."""
    connection = _UnixConnection(path, timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_RESPONSE:
            raise ControlApiError("too_large", "the answer is too large")
        data = response.read(MAX_RESPONSE + 1)
        if len(data) > MAX_RESPONSE:
            raise ControlApiError("too_large", "the answer is too large")
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
        return response.status, content_type, data
    finally:
        connection.close()


class ControlClient:
    """`async with ControlClient(path) as c: await c.status()`."""

    def __init__(self, socket_path: Path | str = DEFAULT_SOCKET, *,
                 clock: Clock = REAL_TIME, timeout_s: float = 30.0) -> None:
        self.socket_path = Path(socket_path)
        self.clock = clock
        self.timeout_s = timeout_s
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._open = False

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: dict[str, str] | None = None) -> tuple[bytes, str]:
        """Body and content type of a successful answer, or ControlApiError."""
        if not self._open:
            raise RuntimeError("use `async with ControlClient(...)`")
        target = f"{path}?{urlencode(params)}" if params else path
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            async with self.clock.timeout(self.timeout_s):
                # The socket's own timeout (the same, in real seconds) ends the worker
                # thread too, so nothing is left waiting once the caller gave up.
                status, content_type, data = await asyncio.to_thread(
                    _exchange, self.socket_path, self.clock.real_seconds(self.timeout_s),
                    method, target, payload)
        except TimeoutError as exc:
            raise ControlApiError("timeout", f"no answer from {self.socket_path} within "
                                  f"{self.timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ControlApiError("unreachable", f"cannot reach the agent at "
                                  f"{self.socket_path}: {exc}") from exc
        if status >= 400:
            raise _refusal(status, data)
        return data, content_type

    async def call(self, method: str, path: str, body: Any = None,
                   params: dict[str, str] | None = None) -> Any:
        """A JSON request and its decoded JSON answer."""
        data, _ = await self.request(method, path, body=body, params=params)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ControlApiError("bad_answer", "the agent's answer is not JSON") from exc

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/status")
        return result

    async def login(self, operator: str, secret: str) -> dict[str, Any]:
        """Sign in at this bench with the operator's PIN or password."""
        result: dict[str, Any] = await self.call("POST", "/login",
                                                 {"operator": operator, "secret": secret})
        return result

    async def confirm_many(self, slots: list[str] | None, *,
                           expected: dict[str, dict[str, str]] | None = None
                           ) -> dict[str, Any]:
        """Confirm several phones (None: every phone waiting now)."""
        body: dict[str, Any] = {"all": True} if slots is None else {"slots": slots}
        if expected:
            body["expected"] = expected
        result: dict[str, Any] = await self.call("POST", "/confirm", body)
        return result

    async def logout(self) -> None:
        await self.call("POST", "/logout")

    async def confirm(self, slot: str, *, session_id: str | None = None,
                      serial: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("session_id", session_id), ("serial", serial)) if v}
        result: dict[str, Any] = await self.call("POST", f"/slots/{_q(slot)}/confirm", body)
        return result

    async def abort(self, slot: str, *, session_id: str | None = None,
                    serial: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("session_id", session_id), ("serial", serial)) if v}
        result: dict[str, Any] = await self.call("POST", f"/slots/{_q(slot)}/abort", body)
        return result

    async def certificate(self, certificate_id: str) -> bytes:
        data, _ = await self.request("GET", f"/certificates/{_q(certificate_id)}")
        return data

    async def certificate_pdf(self, certificate_id: str, language: str = "en") -> bytes:
        data, _ = await self.request("GET", f"/certificates/{_q(certificate_id)}/pdf",
                                     params={"lang": language})
        return data

    async def enter_imeis(self, slot: str, imeis: list[str], *,
                          session_id: str | None = None,
                          serial: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"imeis": imeis}
        body.update({k: v for k, v in (("session_id", session_id), ("serial", serial)) if v})
        result: dict[str, Any] = await self.call("POST", f"/slots/{_q(slot)}/imei", body)
        return result

    async def attest_final_reset(self, slot: str, *, session_id: str | None = None,
                                 serial: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("session_id", session_id), ("serial", serial)) if v}
        result: dict[str, Any] = await self.call("POST", f"/slots/{_q(slot)}/handoff", body)
        return result

    async def intake(self) -> list[dict[str, Any]]:
        result: dict[str, Any] = await self.call("GET", "/intake")
        entries: list[dict[str, Any]] = result["entries"]
        return entries

    async def remove_intake(self, identifier: str) -> None:
        await self.call("DELETE", f"/intake/{_q(identifier)}")

    async def add_intake(self, entries: list[dict[str, str]], *, source: str = "api",
                         replace: bool = False) -> int:
        result = await self.call("POST", "/intake", {"entries": entries, "source": source,
                                                     "replace": replace})
        return int(result["added"])


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _refusal(status: int, body: bytes) -> ControlApiError:
    try:
        data = json.loads(body)
        return ControlApiError(str(data["error"])[:64], str(data["message"])[:500],
                               status=status, hint=str(data.get("hint") or "")[:300] or None)
    except (ValueError, KeyError, TypeError):
        return ControlApiError("http_error", f"the agent answered HTTP {status}",
                               status=status)
