"""The ingest API's request rules (docs/ingest-api.md), shared by the reference receiver
and the platform service so both answer a bench the same way.

    body = await read_upload(request)            # media type, Idempotency-Key, size
    client = client_identity(request, roots)     # the TLS client certificate, or None
    verified = verify(body)                      # CertificateError -> refusal_for(exc)
    check_client(client, verified, anchor)       # issue 10: who sends must be who signed

Every refusal is an `IngestRefusal` carrying the HTTP answer, so handlers stay linear.

Client identity (issue 10): an upload needs a verified TLS client certificate, and the
station it names (subject CN, exactly, ASCII only) must be the station whose ledger the
certificate extends (`chain.station_id`); its issuing root must be the root the
certificate's own chain ends at, so a station of one organisation cannot post into the
ledger of a same-named station of another.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from wipeagent.certs.jws import MAX_CERTIFICATE_BYTES
from wipeagent.certs.verify import VerifiedCertificate
from wipeagent.errors import CertificateError

MEDIA_TYPE = "application/jose+json"
PATH = "/v1/certificates"
CERTIFICATE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Reasons that mean "not a well-formed certificate JWS" (400); every other verifier reason
# (signature, trust, validity, schema, consistency) is a well-formed JWS that fails (422).
MALFORMED_REASONS = frozenset({"too_large", "malformed", "bad_header", "unsupported_alg",
                               "chain_invalid"})
# A station id as a TLS identity: what `pki new-station` and `uplink-key` accept, in ASCII.
_STATION_ID = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,63}$")

# Refusal codes of the client-identity rule (the `error` member of a 403 answer).
CLIENT_CERTIFICATE_REQUIRED = "client_certificate_required"
STATION_MISMATCH = "station_mismatch"
ORGANISATION_MISMATCH = "organisation_mismatch"


def problem(status: int, error: str, message: str, **extra: Any) -> web.Response:
    """An error answer: `{"error", "message", ...extra}` as JSON."""
    return web.json_response({"error": error, "message": message, **extra}, status=status)


class IngestRefusal(Exception):
    """An upload refused before (or instead of) storing; `response` is the answer."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def refuse(status: int, error: str, message: str, **extra: Any) -> IngestRefusal:
    """An IngestRefusal answering `problem(status, error, message, **extra)`."""
    return IngestRefusal(problem(status, error, message, **extra))


def refusal_for(exc: CertificateError) -> IngestRefusal:
    """The answer to a certificate the verifier refused: 400 malformed, else 422."""
    status = 400 if exc.reason in MALFORMED_REASONS else 422
    return refuse(status, "invalid_certificate", exc.message[:300], reason=exc.reason)


async def read_upload(request: web.Request) -> tuple[str, bytes]:
    """(Idempotency-Key, body) of a POST /v1/certificates, or IngestRefusal."""
    if request.content_type != MEDIA_TYPE:
        raise refuse(415, "unsupported_media_type", f"send {MEDIA_TYPE}")
    key = request.headers.get("Idempotency-Key", "")
    if not CERTIFICATE_ID.match(key):
        raise refuse(400, "idempotency_key", "Idempotency-Key must be the certificate id")
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise refuse(413, "too_large",
                     f"a certificate is at most {MAX_CERTIFICATE_BYTES} bytes") from exc
    return key, data


@dataclass(frozen=True)
class ClientIdentity:
    """The verified TLS client certificate of a request."""

    certificate: x509.Certificate
    common_name: str | None  # None: no CN, several CNs, or not an ASCII station id
    root: x509.Certificate | None  # the configured client root that issued it

    @property
    def label(self) -> str:
        """How logs and answers name this client."""
        return self.common_name or self.certificate.subject.rfc4514_string()


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        return None
    value = names[0].value
    return value if _STATION_ID.match(value) else None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key signed `cert` (and the names chain)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def trust_anchor(chain: Sequence[x509.Certificate],
                 roots: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The root among `roots` that `chain` (leaf first) ends at, or None."""
    last = chain[-1]
    last_der = _der(last)
    for root in roots:
        if _der(root) == last_der:
            return root
    for root in roots:
        if issued_by(last, root):
            return root
    return None


def client_identity(request: web.Request,
                    roots: Sequence[x509.Certificate]) -> ClientIdentity | None:
    """The TLS client certificate the handshake verified, or None (none sent, or no TLS).

    The TLS layer (a server context with the client CAs loaded) has already checked the
    chain and the clientAuth purpose; this only reads who it is and which root issued it.
    """
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    root = next((r for r in roots if issued_by(cert, r) or _der(r) == der), None)
    return ClientIdentity(cert, _common_name(cert), root)


def require_client(client: ClientIdentity | None) -> ClientIdentity:
    """The client, or a 403 `client_certificate_required` refusal."""
    if client is None:
        raise refuse(403, CLIENT_CERTIFICATE_REQUIRED,
                     "uploads need the station's TLS client certificate (mutual TLS)")
    return client


def check_client(client: ClientIdentity, verified: VerifiedCertificate,
                 anchor: x509.Certificate | None) -> None:
    """Refuse (403) unless the TLS client is the station that signed the certificate.

    Exact, ASCII-only comparison of the client certificate's CN with `chain.station_id`
    (a look-alike id with a Cyrillic letter is another station), and the client's root
    must be the root the certificate's chain ends at.
    """
    if client.common_name is None or client.common_name != verified.station_id:
        raise refuse(
            403, STATION_MISMATCH,
            f"TLS client {client.label!r} may not deliver certificates of station "
            f"{verified.station_id!r}", station_id=verified.station_id)
    if anchor is None or client.root is None or _der(client.root) != _der(anchor):
        raise refuse(
            403, ORGANISATION_MISMATCH,
            "the TLS client certificate and the wipe certificate chain to different roots",
            station_id=verified.station_id)
