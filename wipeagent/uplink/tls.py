"""TLS for the uplink: the station's client certificate and the SSL contexts.

Why a separate TLS client certificate: the station certificate that signs wipe
certificates carries only the id-kp-documentSigning EKU (RFC 9336), and OpenSSL refuses a
client certificate whose EKU lacks id-kp-clientAuth ("unsupported certificate purpose").
Widening the signing certificate's EKU would let a TLS endpoint obtain signatures from the
document key, so the uplink has its own key (P-256, which every TLS stack accepts) and a
certificate with EKU clientAuth issued by the same organisation CA, subject CN = station
id, so the platform can tell which bench is talking.

    wipeagent uplink-key --out DIR --station-id ID     (on the bench: key 0600 + CSR)
    wipeagent uplink-sign CSR --ca-key --ca-cert --out  (at the CA: the client certificate)

For the demo and tests `ensure_dev_client_tls` does both with the development CA, and
`ensure_dev_server_tls` makes a throwaway "platform" CA and a server certificate for
127.0.0.1 for the reference receiver.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wipeagent.certs.pki import (
    CA_CERT,
    CA_KEY,
    issue_leaf_certificate,
    key_pem,
    sign_certificate,
    sign_csr,
)
from wipeagent.certs.signer import SigningKey
from wipeagent.errors import ConfigError
from wipeagent.keyfile import open_private_key

CLIENT_KEY = "uplink.key"
CLIENT_CSR = "uplink.csr"
CLIENT_CERT = "uplink.pem"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_station_id(station_id: str) -> str:
    if not station_id or len(station_id) > 64 or not station_id.isprintable():
        raise ConfigError(f"station id must be 1-64 printable characters, got {station_id!r}")
    return station_id


@dataclass(frozen=True)
class ClientRequest:
    """Where `new_client_key` wrote the uplink key and its CSR."""

    key: Path
    csr: Path


def new_client_key(directory: Path, *, station_id: str) -> ClientRequest:
    """A new uplink TLS key (P-256, 0600) and a CSR naming the station, made on the bench."""
    _check_station_id(station_id)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, station_id)]))
        .sign(key, hashes.SHA256())
    )
    files = ClientRequest(directory / CLIENT_KEY, directory / CLIENT_CSR)
    if files.key.exists():
        raise ConfigError(f"{files.key} already exists; refusing to overwrite it")
    _write_private(files.key, key_pem(key))
    _write_public(files.csr, csr.public_bytes(serialization.Encoding.PEM))
    return files


def issue_client_certificate(
    csr: x509.CertificateSigningRequest,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    *,
    validity_days: int = 398,
) -> x509.Certificate:
    """A TLS client certificate (EKU clientAuth only) for a station's uplink CSR."""
    return issue_leaf_certificate(csr, ca_key, ca_cert, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                                  validity_days=validity_days)


def sign_client(
    csr_path: Path, *, ca_key_path: Path, ca_cert_path: Path, out_path: Path,
    validity_days: int = 398,
) -> Path:
    """Issue the uplink client certificate; writes it followed by the CA certificate."""
    return sign_csr(csr_path, ca_key_path=ca_key_path, ca_cert_path=ca_cert_path,
                    out_path=out_path, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                    validity_days=validity_days)


@dataclass(frozen=True)
class ClientTls:
    """The uplink's client certificate chain and key files."""

    cert: Path
    key: Path


def ensure_dev_client_tls(dev_pki: Path, *, station_id: str = "dev-station") -> ClientTls:
    """A development uplink certificate under the development CA of `ensure_dev_pki`."""
    directory = dev_pki / "uplink"
    files = ClientTls(directory / CLIENT_CERT, directory / CLIENT_KEY)
    if files.cert.exists() and files.key.exists():
        return files
    for stale in (files.key, files.cert):  # half a pair is no pair: make both anew
        if stale.exists():
            stale.unlink()
    request = new_client_key(directory, station_id=station_id)
    sign_client(request.csr, ca_key_path=dev_pki / "ca" / CA_KEY,
                ca_cert_path=dev_pki / "ca" / CA_CERT, out_path=files.cert)
    return files


@dataclass(frozen=True)
class ServerTls:
    """A server certificate (chain) and key, and the CA that clients must trust."""

    ca: Path
    cert: Path
    key: Path


def ensure_dev_server_tls(directory: Path, *, host: str = "127.0.0.1") -> ServerTls:
    """A throwaway platform CA and a server certificate for `host` (an IP or DNS name)."""
    files = ServerTls(directory / "platform-ca.pem", directory / "server.pem",
                      directory / "server.key")
    if files.ca.exists() and files.cert.exists() and files.key.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            "wipeagent reference platform (test) CA")])
    ca = sign_certificate(
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False),
        ca_key,
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = sign_certificate(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=397))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False),
        ca_key,
    )
    _write_private(files.key, key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_public(files.ca, ca.public_bytes(serialization.Encoding.PEM))
    return files


def client_context(*, ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The uplink's TLS context: verify the platform (system roots or `ca`), present the
    station's client certificate when given."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None or key is not None:
            if cert is None or key is None:
                raise ConfigError("uplink.client_cert and uplink.client_key go together")
            # The key is read through the descriptor that passed the key-file checks.
            with open_private_key(key, "uplink TLS client key") as checked:
                context.load_cert_chain(str(cert), checked.proc_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"uplink TLS set-up failed: {exc}") from exc
    return context


def server_context(*, cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The reference receiver's TLS context; with `client_ca`, a client certificate
    chaining to it is required (mutual TLS)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"receiver TLS set-up failed: {exc}") from exc
    return context
