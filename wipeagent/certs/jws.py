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
from typing import Any

from wipeagent.certs.signer import SUPPORTED_ALGS, b64url

__all__ = ["b64url"]
from wipeagent.errors import CertificateError

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


_TO_STD = str.maketrans("-_", "+/")


def b64url_decode(text: Any, what: str) -> bytes:
    """Strict base64url without padding; CertificateError("malformed") otherwise."""
    # "+", "/" and "=" belong to standard base64 only; strict_mode refuses everything
    # else outside the alphabet (a plain b64decode would silently skip it).
    if (
        not isinstance(text, str)
        or len(text) % 4 == 1
        or "+" in text
        or "/" in text
        or "=" in text
    ):
        raise CertificateError("malformed", f"{what} is not unpadded base64url")
    try:
        return binascii.a2b_base64(
            (text.translate(_TO_STD) + "=" * (-len(text) % 4)).encode("ascii"), strict_mode=True
        )
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CertificateError("malformed", f"{what} is not unpadded base64url") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A JSON object with a key twice is ambiguous (parsers disagree which wins): refuse it.
    result = dict(pairs)  # C speed; a shorter dict than list means a key came twice
    if len(result) != len(pairs):
        raise ValueError("duplicate member in a JSON object")
    return result


def strict_json(data: bytes | str, what: str, reason: str = "malformed") -> Any:
    """Parse JSON refusing duplicate keys and NaN/Infinity."""

    def bad_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=bad_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CertificateError(reason, f"{what} is not valid JSON: {exc}"[:300]) from exc


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


@dataclass(frozen=True)
class ParsedJws:
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
_HEADER_CACHE: dict[str, _Header] = {}
_HEADER_CACHE_MAX = 256


def _parse_header(protected_b64: Any) -> _Header:
    if isinstance(protected_b64, str):
        cached = _HEADER_CACHE.get(protected_b64)
        if cached is not None:
            return cached
    header = strict_json(b64url_decode(protected_b64, "protected header"), "header", "bad_header")
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
    """The payload JSON (duplicate keys and NaN/Infinity refused)."""
    return strict_json(payload_bytes, "payload")


def parse(data: bytes) -> ParsedJws:
    """Strictly decode a stored certificate; CertificateError with a precise reason."""
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateError("too_large", f"certificate is {len(data)} bytes")
    outer = strict_json(data, "certificate")
    if not isinstance(outer, dict) or set(outer) != {"payload", "protected", "signature"}:
        raise CertificateError(
            "malformed",
            "not a flattened JWS JSON object with exactly payload, protected, signature",
        )
    protected_b64, payload_b64 = outer["protected"], outer["payload"]
    head = _parse_header(protected_b64)
    payload_bytes = b64url_decode(payload_b64, "payload")
    signature = b64url_decode(outer["signature"], "signature")
    return ParsedJws(
        header=head.header,
        alg=head.alg,
        kid=head.kid,
        x5c_der=head.x5c_der,
        payload_bytes=payload_bytes,
        signature=signature,
        signing_input=signing_input(protected_b64, payload_b64),
    )
