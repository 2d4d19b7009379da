"""Flattened JWS JSON serialization (RFC 7515 section 7.2.2) as wipeagent uses it.

    {"payload": B64URL(payload JSON), "protected": B64URL(header JSON), "signature": B64URL(sig)}

No unprotected "header" member. The protected header holds exactly alg, typ, kid, x5c.
This module only encodes and strictly decodes; trust decisions live in verify.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import pybase64

from wipeagent.certs.signer import SUPPORTED_ALGS, b64url
from wipeagent.errors import CertificateError

__all__ = ["b64url"]

TYP = "wipeagent-cert+jws"
# An RFC 7638 SHA-256 thumbprint, base64url without padding: always 43 characters.
_KID = re.compile(r"[A-Za-z0-9_-]{43}")
HEADER_MEMBERS = frozenset({"alg", "typ", "kid", "x5c"})
MAX_CERTIFICATE_BYTES = 512 * 1024
MAX_CHAIN = 4
MAX_CERT_DER = 8 * 1024



def canonical_json(value: Any) -> bytes:
    """Deterministic compact UTF-8 JSON (sorted keys, no NaN) for payloads and headers."""
    return json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


# The value of the last base64url character: its unused low bits must be zero, or one
# byte string would have several encodings (a signature with a twin, see parse()).
_B64URL_VALUE = {c: i for i, c in enumerate(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_B64URL_TEXT = re.compile(rb"[A-Za-z0-9_-]*")


def _b64url(raw: bytes, what: str) -> bytes:
    """Strict unpadded base64url bytes -> bytes (see b64url_decode). pybase64 (SIMD) with
    validate=True refuses anything outside the alphabet, ten times faster than binascii."""
    # pybase64 takes "+" and "/" beside the altchars: refuse them here (either would spell
    # the same bytes another way).
    if len(raw) % 4 == 1 or b"+" in raw or b"/" in raw:
        raise CertificateError("malformed", f"{what} is not unpadded base64url")
    try:
        decoded: bytes = pybase64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_",
                                            validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateError("malformed", f"{what} is not unpadded base64url") from exc
    rest = len(raw) % 4
    if rest and _B64URL_VALUE[raw[-1]] & (0b1111 if rest == 2 else 0b11):
        raise CertificateError("not_canonical", f"{what}: base64url with non-zero spare bits")
    return decoded


def b64url_decode(text: Any, what: str) -> bytes:
    """Strict, canonical base64url without padding; CertificateError otherwise.

    "malformed" for anything outside the alphabet or of impossible length; "not_canonical"
    when the unused low bits of the last character are not zero (RFC 4648 section 3.5).
    """
    # "+", "/" and "=" belong to standard base64 only; strict_mode refuses everything
    # else outside the alphabet (a plain b64decode would silently skip it).
    if not isinstance(text, str):
        raise CertificateError("malformed", f"{what} is not unpadded base64url")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise CertificateError("malformed", f"{what} is not unpadded base64url") from exc
    if _B64URL_TEXT.fullmatch(raw) is None:
        raise CertificateError("malformed", f"{what} is not unpadded base64url")
    return _b64url(raw, what)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A JSON object with a key twice is ambiguous (parsers disagree which wins): refuse it.
    result = dict(pairs)  # C speed; a shorter dict than list means a key came twice
    if len(result) != len(pairs):
        raise ValueError("duplicate member in a JSON object")
    return result


def strict_json(data: bytes | str, what: str, reason: str = "malformed") -> Any:
    """Parse UTF-8 JSON refusing duplicate keys and NaN/Infinity."""

    def bad_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        # UTF-8 only (RFC 8259 section 8.1): json.loads would also guess UTF-16 and -32.
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=bad_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CertificateError(reason, f"{what} is not valid JSON: {exc}"[:300]) from exc


def _fast_json(data: bytes) -> Any:
    """The JSON value of `data` when `data` is exactly its own canonical form (sorted keys,
    no whitespace: what canonical_json writes and the agent signs), else None.

    Such text has no duplicate member (a repeated key would be missing from the
    re-encoding, so it could not equal the input) and no NaN/Infinity (orjson refuses
    them), so this is the strict parse at a fraction of its cost. Anything else (another
    float spelling, big integers, whitespace) returns None: the caller parses strictly.
    """
    try:
        value = orjson.loads(data)
        again = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return value if again == data else None


def encode_header(alg: str, kid: str, x5c_der: list[bytes]) -> dict[str, Any]:
    """The protected header (x5c is standard base64 DER, leaf first, RFC 7515 4.1.6)."""
    return {
        "alg": alg,
        "typ": TYP,
        "kid": kid,
        "x5c": [base64.b64encode(der).decode("ascii") for der in x5c_der],
    }


def serialize(header: dict[str, Any], payload: bytes, signature: bytes) -> bytes:
    """The stored bytes of a certificate: compact JSON of the flattened JWS."""
    return json.dumps(
        {
            "payload": b64url(payload),
            "protected": b64url(canonical_json(header)),
            "signature": b64url(signature),
        },
        separators=(",", ":"),
    ).encode("ascii")


def signing_input(protected_b64: str, payload_b64: str) -> bytes:
    """RFC 7515 section 5.1 step 6: ASCII(BASE64URL(header) || '.' || BASE64URL(payload))."""
    return f"{protected_b64}.{payload_b64}".encode("ascii")


class ParsedJws(NamedTuple):
    """A structurally valid JWS: header checked, nothing trusted yet."""

    header: dict[str, Any]
    alg: str
    kid: str
    x5c_der: tuple[bytes, ...]
    payload_bytes: bytes
    signature: bytes
    signing_input: bytes


@dataclass(frozen=True)
class _Header:
    header: dict[str, Any]
    alg: str
    kid: str
    x5c_der: tuple[bytes, ...]


# Every certificate from one station has the same protected header (same alg, kid, x5c):
# parsing it once per distinct header keeps batch verification near the signature cost.
_HEADER_CACHE: dict[bytes, _Header] = {}
_HEADER_CACHE_MAX = 256


def _parse_header(protected_b64: bytes) -> _Header:
    cached = _HEADER_CACHE.get(protected_b64)
    if cached is not None:
        return cached
    header = strict_json(_b64url(protected_b64, "protected header"), "header", "bad_header")
    if not isinstance(header, dict):
        raise CertificateError("bad_header", "protected header is not a JSON object")
    alg = header.get("alg")
    # The alg is judged before anything else in the header: "none" and HMAC never get further.
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGS:
        raise CertificateError("unsupported_alg", f"alg {str(alg)[:20]!r} is not accepted")
    extra = set(header) - HEADER_MEMBERS
    if extra:
        raise CertificateError("bad_header", f"unexpected header members {sorted(extra)[:5]}")
    if header.get("typ") != TYP:
        raise CertificateError("bad_header", f"typ must be {TYP!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
        raise CertificateError("bad_header", "kid is not a SHA-256 JWK thumbprint (43 base64url)")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= MAX_CHAIN:
        raise CertificateError("bad_header", f"x5c must list 1 to {MAX_CHAIN} certificates")
    ders: list[bytes] = []
    for item in x5c:
        if not isinstance(item, str) or len(item) > MAX_CERT_DER * 2:
            raise CertificateError("bad_header", "x5c entry is not a short string")
        try:
            ders.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII string
            raise CertificateError("bad_header", "x5c entry is not base64") from exc
    parsed = _Header(header, alg, kid, tuple(ders))
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[protected_b64] = parsed
    return parsed


def parse_payload(payload_bytes: bytes) -> Any:
    """The payload JSON (UTF-8; duplicate keys and NaN/Infinity refused)."""
    value = _fast_json(payload_bytes)
    return value if value is not None else strict_json(payload_bytes, "payload")


# The one serialization a certificate file may have (see docs/certificate.md, "The file"):
#   {"payload":"<b64url>","protected":"<b64url>","signature":"<b64url>"}
_OPEN, _MIDDLE, _LAST, _CLOSE = b'{"payload":"', b'","protected":"', b'","signature":"', b'"}'


def _canonical_parts(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """payload, protected and signature when `data` has the canonical form's shape; each
    part is then checked by the base64url decoding. (A JSON escape is the only way the
    same content could be spelled differently inside the quotes: no backslash at all.)"""
    if not (data.startswith(_OPEN) and data.endswith(_CLOSE)) or b"\\" in data:
        return None
    # base64url has no quote, so the first separator found is the real one
    middle = data.find(_MIDDLE, len(_OPEN))
    last = data.find(_LAST, middle + 1)
    if middle < 0 or last < 0:
        return None
    parts = (data[len(_OPEN):middle], data[middle + len(_MIDDLE):last],
             data[last + len(_LAST):-len(_CLOSE)])
    if any(b'"' in part for part in parts):
        return None  # more members than three: not this shape (the strict parse says why)
    return parts


def parse(data: bytes) -> ParsedJws:
    """Strictly decode a stored certificate; CertificateError with a precise reason.

    A certificate has exactly one valid serialization: compact JSON with the members in
    the order payload, protected, signature, canonical base64url. Any other spelling of
    the same content (whitespace, member order, escapes, spare base64 bits) would be a
    byte-different twin with another sha256 that a ledger would count as a second
    certificate, so it is refused as "not_canonical".
    """
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateError("too_large", f"certificate is {len(data)} bytes")
    parts = _canonical_parts(data) if isinstance(data, bytes) else None
    if parts is None:
        outer = strict_json(data, "certificate")
        if not isinstance(outer, dict) or set(outer) != {"payload", "protected", "signature"}:
            raise CertificateError(
                "malformed",
                "not a flattened JWS JSON object with exactly payload, protected, signature",
            )
        for member in ("payload", "protected", "signature"):
            b64url_decode(outer[member], member)  # "malformed" before "not_canonical"
        raise CertificateError(
            "not_canonical",
            "not the canonical serialization (compact JSON, members in the order payload, "
            "protected, signature)",
        )
    payload_b64, protected_b64, signature_b64 = parts
    head = _parse_header(protected_b64)
    return ParsedJws(
        head.header,
        head.alg,
        head.kid,
        head.x5c_der,
        _b64url(payload_b64, "payload"),
        _b64url(signature_b64, "signature"),
        # RFC 7515 section 5.1 step 6, straight from the matched bytes.
        b".".join((protected_b64, payload_b64)),
    )
