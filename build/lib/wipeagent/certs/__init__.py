"""Wipe certificates: format, signing, PKI, verification, ledger chain and PDF.

Public API (see docs/certificate.md):
    issue_certificate(record, signer, *, sequence, previous_hash, issued_at=None,
                      development, verification_url) -> IssuedCertificate
    verify_certificate(data, *, trust_roots) -> VerifiedCertificate
    check_sequence(certs) -> list[ChainProblem]
    ensure_dev_pki(directory) -> Signer;  load_station_signer(key, chain) -> Signer
"""

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
