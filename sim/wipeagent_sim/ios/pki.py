"""The simulated iPhone's keys and the checks it makes on a host's pair record.

On a real pairing the *host* generates the certificates (libimobiledevice's userpref.c,
pymobiledevice3's ca.py): a self-signed root, a host certificate and a device certificate
for the public key the phone reported as ``DevicePublicKey`` (PKCS#1 PEM), all signed by the
root. The phone keeps the record and later serves TLS with the device certificate and its
own private key. This module does the phone's half with `cryptography`.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

_MAX_PEM = 16 * 1024


class PairRecordInvalid(Exception):
    """A Pair request's record is unusable (wrong key, bad signature, not PEM)."""


def generate_device_key() -> rsa.RSAPrivateKey:
    """The phone's identity key (real phones use RSA 2048 for lockdown pairing)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def device_public_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """``DevicePublicKey`` as lockdownd reports it: PKCS#1 "RSA PUBLIC KEY" PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )


def new_escrow_bag() -> bytes:
    """An opaque escrow keybag blob handed to the host on a successful Pair."""
    return secrets.token_bytes(512)


def _load_cert(value: object, field: str) -> x509.Certificate:
    if not isinstance(value, bytes) or not value or len(value) > _MAX_PEM:
        raise PairRecordInvalid(f"{field} missing or not PEM data")
    try:
        with warnings.catch_warnings():
            # libimobiledevice 1.3 issues pair certificates with serial number 0; real
            # phones accept them, so the simulator must too.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_pem_x509_certificate(value)
    except ValueError as e:
        raise PairRecordInvalid(f"{field} is not a PEM certificate") from e


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None:
        return False
    try:
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class StoredPairing:
    """What the phone remembers about one paired host."""

    host_id: str
    system_buid: str
    device_certificate: bytes
    host_certificate: bytes
    root_certificate: bytes


def check_pair_record(record: dict[str, object], device_key: rsa.RSAPrivateKey) -> StoredPairing:
    """Validate a Pair request's ``PairRecord`` the way the phone must.

    The device certificate must carry this phone's public key, and both the device and
    host certificates must be signed by the root certificate.
    """
    host_id = record.get("HostID")
    if not isinstance(host_id, str) or not 0 < len(host_id) <= 128:
        raise PairRecordInvalid("HostID missing")
    buid = record.get("SystemBUID", "")
    if not isinstance(buid, str) or len(buid) > 128:
        raise PairRecordInvalid("SystemBUID invalid")
    device_cert = _load_cert(record.get("DeviceCertificate"), "DeviceCertificate")
    host_cert = _load_cert(record.get("HostCertificate"), "HostCertificate")
    root_cert = _load_cert(record.get("RootCertificate"), "RootCertificate")
    if device_cert.public_key() != device_key.public_key():
        raise PairRecordInvalid("DeviceCertificate is not for this device's key")
    if not (_signed_by(device_cert, root_cert) and _signed_by(host_cert, root_cert)):
        raise PairRecordInvalid("certificates are not signed by RootCertificate")
    return StoredPairing(
        host_id=host_id,
        system_buid=buid,
        device_certificate=device_cert.public_bytes(serialization.Encoding.PEM),
        host_certificate=host_cert.public_bytes(serialization.Encoding.PEM),
        root_certificate=root_cert.public_bytes(serialization.Encoding.PEM),
    )


def server_tls_context(
    pairing: StoredPairing, device_key: rsa.RSAPrivateKey, *, max_version: str = "1.3"
) -> ssl.SSLContext:
    """The phone's TLS server context for a session or service of a paired host.

    The phone presents the device certificate the host generated (and its own private
    key), and requires the host to prove it holds a key of the pairing: the client
    certificate must be the pair record's HostCertificate (pymobiledevice3 presents it) or
    RootCertificate (libimobiledevice presents that one).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = (
        ssl.TLSVersion.TLSv1_2 if max_version == "1.2" else ssl.TLSVersion.TLSv1_3
    )
    # Pair certificates may be SHA-1 signed (old hosts): accept what real phones accept.
    context.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
    context.verify_mode = ssl.CERT_REQUIRED
    # Both certificates are trust anchors: their empty subject and issuer names make the
    # host certificate look self-issued, which defeats ordinary chain building.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(
        cadata=(pairing.root_certificate + pairing.host_certificate).decode("ascii")
    )
    key_pem = device_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # ssl can only load a certificate chain from a file: use a private, short-lived one.
    fd, path = tempfile.mkstemp(prefix="wipeagent-sim-ios-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pairing.device_certificate + key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context
