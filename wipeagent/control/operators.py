"""Operators: who may act at this bench, and the proof that they are who they say.

The administrator enrols operators (`wipeagent operator add NAME`); each has a PIN or a
password, stored only as an argon2id hash (argon2-cffi, RFC 9106 parameters) in
`<state_dir>/operators.json` (mode 0600, owned by the owner of the state directory, never
a symlink). The agent reads the file at each sign-in, so enrolment takes effect without a
restart and the agent never writes it.

A sign-in proves that whoever signed in knew that operator's secret at that moment; the
name on a certificate (custody.operator) is the operator signed in when the erase was
confirmed. It does not prove who held the phone afterwards, and it is only as strong as
the secret and the bench's physical security (docs/api.md, "What an operator name proves").

`SignIns` keeps who is signed in (per browser or per control socket), signs them out
after `control.idle_signout_s` bench seconds without an action, and `Throttle` refuses
sign-in attempts after repeated failures (per operator name and per client address).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from wipeagent.clock import Clock
from wipeagent.errors import ConfigError, ControlError

OPERATORS_FILE = "operators.json"
FILE_VERSION = 1
# An operator name goes into signed certificates (custody.operator) and onto terminals:
# printable, no markup or control characters, bounded.
OPERATOR_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}$")
MIN_SECRET = 6  # a 6-digit PIN at least; argon2 + the throttle make guessing slow
MAX_SECRET = 256
MAX_OPERATORS = 1000

# argon2id with the RFC 9106 "low memory" profile (t=3, m=64 MiB, p=4): ~50-100 ms a check
# on a bench PC, run off the event loop.
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)
# Checked when the name is unknown, so a wrong name costs as long as a wrong secret.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


def check_name(name: object) -> str:
    """A valid operator name, or ControlError(bad_operator)."""
    if not isinstance(name, str) or not OPERATOR_PATTERN.fullmatch(name):
        raise ControlError(
            "bad_operator", "an operator name is 1-64 letters, digits, spaces or ._@+-",
            status=400, hint="use the name on the operator's badge, e.g. j.smith")
    return name


def check_secret(secret: object) -> str:
    """A PIN or password acceptable for enrolment."""
    if not isinstance(secret, str) or not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise ControlError(
            "weak_secret", f"a PIN or password has {MIN_SECRET} to {MAX_SECRET} characters",
            status=400,
            hint=f"choose a PIN of at least {MIN_SECRET} digits or a longer password")
    if any(ord(c) < 32 for c in secret):
        raise ControlError("weak_secret", "a PIN or password has no control characters",
                           status=400)
    return secret


@dataclass(frozen=True)
class Operator:
    name: str
    hash: str
    created_at: str
    changed_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class OperatorRegistry:
    """The enrolled operators, in one JSON file written atomically (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_state_dir(cls, state_dir: Path | str) -> OperatorRegistry:
        return cls(Path(state_dir) / OPERATORS_FILE)

    def _check_file(self) -> os.stat_result | None:
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{self.path} is not a regular file",
                              hint="remove it and enrol the operators again")
        if info.st_mode & 0o077:
            raise ConfigError(f"{self.path} is readable by others (mode "
                              f"{stat.S_IMODE(info.st_mode):o})",
                              hint=f"chmod 600 {self.path}")
        return info

    def load(self) -> dict[str, Operator]:
        """Every enrolled operator by name (empty when nobody is enrolled)."""
        if self._check_file() is None:
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("version") != FILE_VERSION:
                raise ValueError(f"version {raw.get('version')!r}")
            found = {}
            for name, entry in raw["operators"].items():
                check_name(name)
                if not str(entry["hash"]).startswith("$argon2id$"):
                    raise ValueError(f"{name}: not an argon2id hash")
                found[name] = Operator(name, str(entry["hash"]), str(entry["created_at"]),
                                       str(entry["changed_at"]))
            return found
        except (ValueError, KeyError, TypeError, AttributeError, ControlError) as exc:
            raise ConfigError(f"{self.path}: not an operators file: {exc}",
                              hint="restore it from a backup or enrol the operators "
                                   "again") from exc

    def _save(self, operators: dict[str, Operator]) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        data = {"version": FILE_VERSION, "operators": {
            o.name: {"hash": o.hash, "created_at": o.created_at, "changed_at": o.changed_at}
            for o in sorted(operators.values(), key=lambda o: o.name)}}
        fd, tmp = tempfile.mkstemp(prefix=".operators.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            # The agent runs as the owner of its state directory (a service user); an
            # administrator enrolling as root must leave a file that user can read.
            owner = directory.stat()
            if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
                os.fchown(fd, owner.st_uid, owner.st_gid)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def add(self, name: str, secret: str) -> Operator:
        operators = self.load()
        check_name(name)
        if name in operators:
            raise ControlError("operator_exists", f"operator {name} is already enrolled",
                               status=409,
                                hint=f"change the secret with `wipeagent operator passwd "
                                     f"{name}`")
        if len(operators) >= MAX_OPERATORS:
            raise ControlError("too_many_operators", f"at most {MAX_OPERATORS} operators",
                               status=409)
        now = _now()
        operator = Operator(name, _HASHER.hash(check_secret(secret)), now, now)
        operators[name] = operator
        self._save(operators)
        return operator

    def set_secret(self, name: str, secret: str) -> None:
        operators = self.load()
        old = self._get(operators, name)
        operators[name] = Operator(name, _HASHER.hash(check_secret(secret)), old.created_at,
                                   _now())
        self._save(operators)

    def remove(self, name: str) -> None:
        operators = self.load()
        self._get(operators, name)
        del operators[name]
        self._save(operators)

    @staticmethod
    def _get(operators: dict[str, Operator], name: str) -> Operator:
        if name not in operators:
            raise ControlError("no_such_operator", f"no operator {name} is enrolled",
                                status=404, hint="list them with `wipeagent operator list`")
        return operators[name]

    def verify(self, name: str, secret: str) -> bool:
        """True when `secret` is `name`'s. Blocking (argon2): call it off the loop. An
        unknown name costs the same as a wrong secret."""
        operators = self.load()
        operator = operators.get(name)
        try:
            return _HASHER.verify(operator.hash if operator else _DUMMY_HASH, secret) and (
                operator is not None)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


# -- who is signed in --------------------------------------------------------------------

SOCKET_CHANNEL = "socket"  # the control socket's one sign-in (the CLI)


@dataclass
class SignIn:
    operator: str
    channel: str  # "socket" or "web"
    signed_in_at: str
    last_seen: float  # clock.monotonic()
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class SignIns:
    """Live sign-ins, by token. The control socket has one (token SOCKET_CHANNEL); each
    browser has its own (a random token in an HttpOnly cookie). A sign-in idle for
    `idle_s` bench seconds is gone; every action by it refreshes it."""

    MAX = 256

    def __init__(self, clock: Clock, idle_s: float) -> None:
        self.clock = clock
        self.idle_s = idle_s
        self._by_token: dict[str, SignIn] = {}

    def start(self, operator: str, channel: str) -> tuple[str, SignIn]:
        self.expire()
        token = SOCKET_CHANNEL if channel == SOCKET_CHANNEL else secrets.token_urlsafe(32)
        if len(self._by_token) >= self.MAX:  # drop the stalest browser
            oldest = min(self._by_token, key=lambda t: self._by_token[t].last_seen)
            del self._by_token[oldest]
        entry = SignIn(operator, channel, datetime.now(UTC).isoformat(timespec="seconds"),
                       self.clock.monotonic())
        self._by_token[token] = entry
        return token, entry

    def get(self, token: str | None, *, touch: bool = False) -> SignIn | None:
        """The live sign-in for `token`; `touch` counts this as activity."""
        if not token:
            return None
        entry = self._by_token.get(token)
        if entry is None:
            return None
        now = self.clock.monotonic()
        if now - entry.last_seen > self.idle_s:
            del self._by_token[token]
            return None
        if touch:
            entry.last_seen = now
        return entry

    def end(self, token: str | None) -> SignIn | None:
        return self._by_token.pop(token, None) if token else None

    def end_operator(self, operator: str) -> int:
        """Sign an operator out everywhere (removed from the registry)."""
        gone = [t for t, e in self._by_token.items() if e.operator == operator]
        for token in gone:
            del self._by_token[token]
        return len(gone)

    def expire(self) -> list[SignIn]:
        """Drop idle sign-ins; returns them (to journal the sign-outs)."""
        now = self.clock.monotonic()
        gone = [t for t, e in self._by_token.items() if now - e.last_seen > self.idle_s]
        return [self._by_token.pop(t) for t in gone]

    def latest(self) -> SignIn | None:
        """The most recently active live sign-in: "the operator at the bench"."""
        self.expire()
        if not self._by_token:
            return None
        return max(self._by_token.values(), key=lambda e: e.last_seen)

    def remaining_s(self, entry: SignIn) -> float:
        return max(0.0, self.idle_s - (self.clock.monotonic() - entry.last_seen))


class Throttle:
    """Failed sign-ins: after `limit` failures for one key (an operator name, a client
    address) within `window_s` bench seconds, that key is refused until the window has
    passed since its last failure. A success clears the key."""

    def __init__(self, clock: Clock, *, limit: int = 5, window_s: float = 300.0) -> None:
        self.clock = clock
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str) -> list[float]:
        now = self.clock.monotonic()
        recent = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def retry_after(self, *keys: str) -> float:
        """Bench seconds until these keys may try again (0: now)."""
        wait = 0.0
        for key in keys:
            recent = self._recent(key)
            if len(recent) >= self.limit:
                wait = max(wait, self.window_s - (self.clock.monotonic() - recent[-1]))
        return wait

    def failed(self, *keys: str) -> None:
        if len(self._failures) > 10_000:  # an address sweep must not grow memory for ever
            self._failures.clear()
        for key in keys:
            self._failures.setdefault(key, []).append(self.clock.monotonic())
            del self._failures[key][: -self.limit * 2]

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


def describe(operators: dict[str, Operator]) -> list[dict[str, Any]]:
    """What `operator list` shows (never the hashes)."""
    return [{"name": o.name, "created_at": o.created_at, "changed_at": o.changed_at}
            for o in sorted(operators.values(), key=lambda o: o.name)]
