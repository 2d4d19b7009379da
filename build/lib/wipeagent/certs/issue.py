"""Issuing: SessionRecord -> validated payload -> JWS signed by the station -> self-check.

Like fwupd, the agent verifies its own signature before handing a certificate out, and
it verifies it twice: with joserfc (an independent, maintained JOSE implementation) and
with our own full verifier (chain, validity at issue time, schema, consistency).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jws as jose_jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry

from wipeagent.certs import jws
from wipeagent.certs.payload import build_payload, now_utc, uuid7, validate_payload
from wipeagent.certs.pki import is_development
from wipeagent.certs.signer import Signer, alg_for_key
from wipeagent.certs.verify import verifier_for
from wipeagent.errors import CertificateError
from wipeagent.models import SessionRecord


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate as stored: `data` is exactly what goes to disk and uplink."""

    certificate_id: str
    sha256: str  # of `data`; the next certificate's previous_hash
    data: bytes
    payload: dict[str, Any] = field(repr=False)


def _joserfc_check(data: bytes, signer: Signer) -> None:
    """Independent check of the signature with joserfc, allowing only the signer's alg."""
    public = signer.chain[0].public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = OKPKey.import_key(pem) if signer.alg == "EdDSA" else ECKey.import_key(pem)
    registry = JWSRegistry(algorithms=[signer.alg])
    # joserfc's defaults (512-byte header) are sized for tokens; our header carries x5c.
    registry.max_header_length = 4 * jws.MAX_CERT_DER * jws.MAX_CHAIN
    registry.max_payload_length = jws.MAX_CERTIFICATE_BYTES
    with warnings.catch_warnings():
        # joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519"; RFC 8037 EdDSA is
        # what every verifier (jwcrypto, jose, go-jose) understands today.
        warnings.simplefilter("ignore")
        try:
            jose_jws.deserialize_json(json.loads(data), key, registry=registry)
        except (JoseError, ValueError) as exc:
            raise CertificateError(
                "bad_signature", f"self-check with joserfc failed: {exc}",
                hint="the station key or token is faulty: stop issuing and call support",
            ) from exc


def issue_certificate(
    record: SessionRecord,
    signer: Signer,
    *,
    sequence: int,
    previous_hash: str | None,
    issued_at: datetime | None = None,
    development: bool,
    verification_url: str | None,
) -> IssuedCertificate:
    """Build, validate, sign and self-verify the certificate for a finished session.

    Raises CertificateError when the record cannot make a valid certificate (reasons
    "schema_invalid", "inconsistent_payload", "inconsistent_record",
    "development_mismatch") or the signature fails its own check.
    """
    if not signer.chain:
        raise CertificateError("chain_invalid", "the signer has no certificate chain")
    if any(is_development(c) for c in signer.chain) and not development:
        raise CertificateError(
            "development_mismatch", "a development station key cannot sign production certificates",
            hint="install a station certificate from the organisation CA (pki sign-station)",
        )
    leaf_alg = alg_for_key(signer.chain[0].public_key())  # type: ignore[arg-type]
    if signer.alg != leaf_alg:
        raise CertificateError("alg_mismatch", f"signer alg {signer.alg}, key needs {leaf_alg}")
    issued_at = issued_at or now_utc()
    certificate_id = uuid7(issued_at)
    payload = build_payload(
        record,
        certificate_id=certificate_id,
        issued_at=issued_at,
        sequence=sequence,
        previous_hash=previous_hash,
        development=development,
        verification_url=verification_url,
    )
    validate_payload(payload, thorough=True)
    header = jws.encode_header(
        signer.alg, signer.kid,
        [c.public_bytes(serialization.Encoding.DER) for c in signer.chain],
    )
    protected_b64 = jws.b64url(jws.canonical_json(header))
    payload_bytes = jws.canonical_json(payload)
    payload_b64 = jws.b64url(payload_bytes)
    signature = signer.sign(jws.signing_input(protected_b64, payload_b64))
    data = jws.serialize(header, payload_bytes, signature)
    _joserfc_check(data, signer)
    # Full self-verification, anchored at the last certificate of our own chain.
    verifier_for([signer.chain[-1]]).verify(data, now=issued_at)
    return IssuedCertificate(
        certificate_id=certificate_id,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        payload=payload,
    )
