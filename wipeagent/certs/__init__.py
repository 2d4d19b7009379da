"""Wipe certificates: format, signing, PKI, verification, ledger chain and PDF.

Public API (see docs/certificate.md):
    issue_certificate(record, signer, *, sequence, previous_hash, issued_at=None,
                      development, verification_url) -> IssuedCertificate
    verify_certificate(data, *, trust_roots) -> VerifiedCertificate
    check_sequence(certs) -> list[ChainProblem]
    ensure_dev_pki(directory) -> Signer;  load_station_signer(key, chain) -> Signer

Names are imported on first use (PEP 562): verifying needs only the core dependencies
(cryptography, jsonschema-rs), issuing also the bench's (joserfc, pydantic).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wipeagent.certs.issue import IssuedCertificate, issue_certificate
    from wipeagent.certs.pki import dev_trust_root, ensure_dev_pki, load_trust_roots
    from wipeagent.certs.signer import KeySigner, Signer, load_station_signer
    from wipeagent.certs.verify import (
        REASONS,
        ChainProblem,
        VerifiedCertificate,
        Verifier,
        check_sequence,
        verify_certificate,
    )

_WHERE = {
    "IssuedCertificate": "issue",
    "issue_certificate": "issue",
    "dev_trust_root": "pki",
    "ensure_dev_pki": "pki",
    "load_trust_roots": "pki",
    "KeySigner": "signer",
    "Signer": "signer",
    "load_station_signer": "signer",
    "REASONS": "verify",
    "ChainProblem": "verify",
    "VerifiedCertificate": "verify",
    "Verifier": "verify",
    "check_sequence": "verify",
    "verify_certificate": "verify",
}

__all__ = [
    "REASONS",
    "ChainProblem",
    "IssuedCertificate",
    "KeySigner",
    "Signer",
    "VerifiedCertificate",
    "Verifier",
    "check_sequence",
    "dev_trust_root",
    "ensure_dev_pki",
    "issue_certificate",
    "load_station_signer",
    "load_trust_roots",
    "verify_certificate",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
