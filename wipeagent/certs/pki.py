"""The trust set-up: an organisation root CA (kept offline) signs one certificate per station.

    pki init-ca       organisation root CA key + self-signed certificate (offline machine)
    pki new-station   station key (0600) + CSR, made on the bench so the key never leaves it
    pki sign-station  the CA turns a CSR into a station certificate (on the offline machine)

Station certificates: keyUsage digitalSignature only (critical), extendedKeyUsage
id-kp-documentSigning (RFC 9336, 1.3.6.1.5.5.7.3.36), basicConstraints CA=false (critical),
subject CN = station id, O = organisation. Rotation is a new key + certificate; older wipe
certificates stay verifiable because verification checks validity at their issue time
and every wipe certificate carries its own chain.

A development CA puts DEV_OU ("wipeagent development - not for production") in the subject
of itself and of every station certificate it signs; certificates signed under it must say
"development": true.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID, ObjectIdentifier

from wipeagent.certs.signer import (
    KeySigner,
    SigningKey,
    load_certificates,
    load_private_key,
    load_station_signer,
    read_bounded,
)
from wipeagent.errors import ConfigError

# RFC 9336 id-kp-documentSigning: "signing human-readable documents".
EKU_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
DEV_OU = "wipeagent development - not for production"
# A station id: ASCII letters, digits, ".", "_", "-" (as `station.id` in the agent's
# configuration). ASCII only, so that no look-alike (a Cyrillic "е" for a Latin "e") can
# ever name another station: ids are compared byte for byte.
STATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEY_TYPES = ("ed25519", "p256")

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
STATION_KEY = "station.key"
STATION_CSR = "station.csr"
STATION_CHAIN = "station.pem"


def generate_key(key_type: str) -> SigningKey:
    """A new Ed25519 ("ed25519") or ECDSA P-256 ("p256") private key."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def sign_certificate(builder: x509.CertificateBuilder, key: SigningKey) -> x509.Certificate:
    """Sign a certificate with a CA key (Ed25519, or ECDSA P-256 with SHA-256)."""
    # Ed25519 signs without a separate digest; ECDSA uses RFC 6979 deterministic nonces so
    # a bad RNG can never leak the CA key (and the test corpus regenerates byte for byte).
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None)
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)




def _write_new(path: Path, data: bytes, *, private: bool) -> None:
    """Create `path` (never overwrite); private files are created 0600 atomically."""
    mode = 0o600 if private else 0o644
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise ConfigError(
            f"{path} already exists; refusing to overwrite it",
            hint="move the old file away first if you really mean to replace it",
        ) from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have taken bits away from a public file


def key_pem(key: SigningKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (written only to 0600 files)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organisation: str, development: bool) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    if development:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEV_OU))
    return x509.Name(attrs)


def is_development(cert: x509.Certificate) -> bool:
    """Whether a certificate carries the development marker in its subject."""
    return any(
        attr.value == DEV_OU
        for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    )


def check_station_id(value: str) -> str:
    """`value` if it is a valid station id, else ConfigError."""
    if not isinstance(value, str) or STATION_ID.fullmatch(value) is None:
        raise ConfigError(
            f"station id {value!r} is not 1-64 ASCII letters, digits, '.', '_', '-' "
            "(starting with a letter or digit)"
        )
    return value


def station_id_of(cert: x509.Certificate) -> str | None:
    """The station id a station certificate names: its one subject CN, if that is a valid
    (ASCII) station id; None otherwise. This binds a payload's station id to its signer."""
    try:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if len(cns) != 1:
        return None
    value = cns[0].value
    if not isinstance(value, str) or STATION_ID.fullmatch(value) is None:
        return None
    return value


def _check_text(value: str, what: str) -> str:
    if not value or len(value) > 64 or any(ord(c) < 0x20 for c in value):
        raise ConfigError(f"{what} must be 1-64 printable characters, got {value!r}")
    return value


@dataclass(frozen=True)
class CaFiles:
    """Where init-ca wrote the CA."""

    key: Path
    cert: Path


def init_ca(
    directory: Path,
    *,
    organisation: str,
    common_name: str | None = None,
    key_type: str = "ed25519",
    validity_days: int = 3650,
    development: bool = False,
    now: dt.datetime | None = None,
) -> CaFiles:
    """Create an organisation root CA: `ca.key` (0600) and self-signed `ca.pem`."""
    _check_text(organisation, "organisation")
    cn = _check_text(common_name or f"{organisation} wipe certificate root CA", "CA name")
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_key(key_type)
    now = now or dt.datetime.now(dt.UTC)
    cert = make_ca_certificate(
        key,
        organisation=organisation,
        common_name=cn,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=validity_days),
        development=development,
    )
    files = CaFiles(directory / CA_KEY, directory / CA_CERT)
    _write_new(files.key, key_pem(key), private=True)
    _write_new(files.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def make_ca_certificate(
    key: SigningKey,
    *,
    organisation: str,
    common_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    development: bool = False,
    serial: int | None = None,
) -> x509.Certificate:
    """A self-signed root CA certificate (pathLen 0: it signs station certificates only)."""
    name = _name(common_name, organisation, development)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return sign_certificate(builder, key)


@dataclass(frozen=True)
class StationRequest:
    """Where new-station wrote the station key and CSR."""

    key: Path
    csr: Path


def new_station(
    directory: Path, *, station_id: str, organisation: str = "", key_type: str = "ed25519"
) -> StationRequest:
    """Create the station key (0600) and a CSR for the CA, on the bench itself."""
    check_station_id(station_id)
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_key(key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(station_id, organisation, False))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    files = StationRequest(directory / STATION_KEY, directory / STATION_CSR)
    _write_new(files.key, key_pem(key), private=True)
    _write_new(files.csr, csr.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def issue_leaf_certificate(
    csr: x509.CertificateSigningRequest,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    *,
    usage: x509.ObjectIdentifier = EKU_DOCUMENT_SIGNING,
    validity_days: int = 398,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A station's end-entity certificate for a CSR, with the one extended key usage
    `usage`: document signing for the station (certificate) key, TLS client auth for the
    uplink key. The CA decides every extension, not the CSR."""
    if not csr.is_signature_valid:
        raise ConfigError("the CSR's signature is invalid", hint="make a new one: pki new-station")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        raise ConfigError("the CSR needs exactly one common name (the station id)")
    station_id = check_station_id(cns[0].value)
    orgs = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    organisation = str(orgs[0].value) if orgs else ""
    public = csr.public_key()
    if not isinstance(public, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) or (
        isinstance(public, ec.EllipticCurvePublicKey) and not isinstance(public.curve, ec.SECP256R1)
    ):
        raise ConfigError("station keys must be Ed25519 or ECDSA P-256")
    now = now or dt.datetime.now(dt.UTC)
    start = not_before or now - dt.timedelta(minutes=5)
    end = not_after or now + dt.timedelta(days=validity_days)
    # Never outlive the CA: a verifier would reject the tail anyway.
    end = min(end, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(station_id, organisation, is_development(ca_cert)))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return sign_certificate(builder, ca_key)


def issue_station_certificate(
    csr: x509.CertificateSigningRequest,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    **kw: Any,
) -> x509.Certificate:
    """The station (certificate-signing) certificate for a CSR: EKU document signing."""
    return issue_leaf_certificate(csr, ca_key, ca_cert, usage=EKU_DOCUMENT_SIGNING, **kw)


def sign_csr(
    csr_path: Path,
    *,
    ca_key_path: Path,
    ca_cert_path: Path,
    out_path: Path,
    usage: x509.ObjectIdentifier,
    validity_days: int = 398,
) -> Path:
    """Issue a certificate for a CSR file; writes the chain (certificate, then the CA)
    to a new file (never overwriting one)."""
    try:
        csr = x509.load_pem_x509_csr(read_bounded(csr_path, "CSR"))
    except ValueError as exc:
        raise ConfigError(f"{csr_path} is not a PEM certificate signing request") from exc
    ca_key = load_private_key(ca_key_path, "CA key")
    ca_cert = load_certificates(ca_cert_path)[0]
    cert = issue_leaf_certificate(csr, ca_key, ca_cert, usage=usage,
                                  validity_days=validity_days)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, ca_cert))
    _write_new(out_path, pem, private=False)
    return out_path


def sign_station(
    csr_path: Path,
    *,
    ca_key_path: Path,
    ca_cert_path: Path,
    out_path: Path,
    validity_days: int = 398,
) -> Path:
    """Issue a station certificate; writes the chain (station certificate, then the CA)."""
    return sign_csr(csr_path, ca_key_path=ca_key_path, ca_cert_path=ca_cert_path,
                    out_path=out_path, usage=EKU_DOCUMENT_SIGNING,
                    validity_days=validity_days)


def load_trust_roots(path: Path) -> list[x509.Certificate]:
    """Trust roots (PEM, one or more certificates) for verification."""
    return load_certificates(path)


def ensure_dev_pki(directory: Path, *, station_id: str = "dev-station") -> KeySigner:
    """The development signer: creates (once) a dev root CA and a station key + chain.

    Everything here is marked development (subject OU), and certificates issued with it
    must carry "development": true. Later calls load the same files. The station
    certificate names `station_id` (certificates are bound to it): asked for another id,
    the development station key and certificate are made anew under the same CA.
    """
    check_station_id(station_id)
    directory = Path(directory)
    chain_path = directory / STATION_CHAIN
    key_path = directory / STATION_KEY
    if chain_path.exists() and station_id_of(load_certificates(chain_path)[0]) != station_id:
        chain_path.unlink()
    if not chain_path.exists():
        # A development key without its chain (or for another station) is of no use.
        key_path.unlink(missing_ok=True)
        (directory / STATION_CSR).unlink(missing_ok=True)
        ca_dir = directory / "ca"
        if not (ca_dir / CA_CERT).exists():
            init_ca(ca_dir, organisation="wipeagent development", development=True)
        new_station(directory, station_id=station_id, organisation="wipeagent development")
        sign_station(
            directory / STATION_CSR,
            ca_key_path=ca_dir / CA_KEY,
            ca_cert_path=ca_dir / CA_CERT,
            out_path=chain_path,
        )
    return load_station_signer(key_path, chain_path)


def dev_trust_root(directory: Path) -> x509.Certificate:
    """The development root CA made by `ensure_dev_pki(directory)`."""
    return load_certificates(Path(directory) / "ca" / CA_CERT)[0]
