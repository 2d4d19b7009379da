"""The signing seam: one small Protocol, so a PKCS#11 token can hold the station key later.

A `Signer` produces JWS signatures (RFC 7515 section 5.1 signing input in, the raw JWS
signature out: 64 bytes for Ed25519 and for ES256 the fixed-width R||S form of RFC 7518
section 3.4, not DER). Everything else about certificates is built around it.

ES256 signatures are canonical "low S" (S <= n/2, as Bitcoin's BIP 62 and libsecp256k1
require): (R, S) and (R, n - S) both verify under plain ECDSA, so without this rule anyone
could turn a genuine certificate into a byte-different valid twin. The signer always
emits low S and the verifier refuses high S. Ed25519 needs no such rule: OpenSSL refuses
S >= L (RFC 8032 section 5.1.7), so its signatures are not malleable.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from wipeagent.errors import CertificateError, ConfigError
from wipeagent.keyfile import read_private_key

# JWS algorithms we sign and accept. Anything else ("none", HS256, RS256 ...) is refused.
ALG_EDDSA = "EdDSA"
ALG_ES256 = "ES256"
SUPPORTED_ALGS = frozenset({ALG_EDDSA, ALG_ES256})

# The order n of the P-256 group (SEC 2 v2 section 2.4.2; FIPS 186-4 D.1.2.3): ES256
# signatures are canonical when S <= n // 2.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2

# A PEM key or certificate file is small; anything bigger is not ours.
MAX_PEM_BYTES = 64 * 1024

SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
VerifyingKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@runtime_checkable
class Signer(Protocol):
    """Whatever holds the station key: a file today, a PKCS#11 token tomorrow."""

    @property
    def alg(self) -> str:
        """The JWS "alg" of the signatures this signer makes ("EdDSA" or "ES256")."""
        ...

    @property
    def kid(self) -> str:
        """Key id written into the JWS header (RFC 7638 thumbprint of the public key)."""
        ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The station certificate chain, leaf first (the leaf holds this signer's key)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The raw JWS signature of `data` (the JWS signing input)."""
        ...


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def alg_for_key(key: SigningKey | VerifyingKey) -> str:
    """The one JWS alg a key may be used with; CertificateError for any other key type."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return ALG_EDDSA
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return ALG_ES256
    raise CertificateError(
        "unsupported_key", f"unsupported key type {type(key).__name__}",
        hint="station and CA keys must be Ed25519 or ECDSA P-256",
    )


def jwk_thumbprint(key: VerifyingKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key: the JWS "kid".

    CertificateError("unsupported_key") for anything but Ed25519 and P-256 keys.
    """
    alg_for_key(key)  # P-384 and others are refused here, not by an OverflowError below
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    else:
        numbers = key.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    # RFC 7638: required members only, lexicographic order, no whitespace.
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def raw_sign(key: SigningKey, data: bytes) -> bytes:
    """Sign `data` the way JWS wants it (ES256 as R||S, RFC 7518 section 3.4, low S)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    # RFC 6979 deterministic nonces: no dependence on the RNG at signing time.
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    if s > P256_HALF_ORDER:
        s = P256_ORDER - s  # the canonical twin: (r, n - s) verifies just the same
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def is_low_s(signature: bytes) -> bool:
    """Whether a 64-byte ES256 R||S signature is canonical (S <= n/2)."""
    return int.from_bytes(signature[32:64], "big") <= P256_HALF_ORDER


def raw_verify(key: VerifyingKey, signature: bytes, data: bytes) -> None:
    """Verify a JWS signature; raises cryptography's InvalidSignature when it is wrong."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
        return
    if len(signature) != 64:
        raise InvalidSignature("ES256 signature must be 64 bytes")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))


class KeySigner:
    """A `Signer` over a private key held in memory (loaded from a 0600 file)."""

    def __init__(self, key: SigningKey, chain: tuple[x509.Certificate, ...]) -> None:
        if not chain:
            raise ConfigError("a station signer needs its certificate chain")
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise ConfigError("the station certificate holds an unsupported key type")
        public = key.public_key()
        if jwk_thumbprint(public) != jwk_thumbprint(leaf_key):
            raise ConfigError(
                "the station key does not match the station certificate",
                hint="use the certificate issued for this key (pki sign-station)",
            )
        self._key = key
        self._alg = alg_for_key(key)
        self._kid = jwk_thumbprint(public)
        self._chain = chain

    @property
    def alg(self) -> str:
        """JWS alg matching the key."""
        return self._alg

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint of the station public key."""
        return self._kid

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Station certificate chain, leaf first."""
        return self._chain

    def sign(self, data: bytes) -> bytes:
        """Raw JWS signature of `data`."""
        return raw_sign(self._key, data)


def read_bounded(path: Path, what: str) -> bytes:
    """Read a small file (key, certificate) or raise ConfigError with a hint."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def load_private_key(path: Path, what: str = "key file") -> SigningKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 / P-256 key from a file that passes the
    key-file checks (wipeagent.keyfile: mode 0600/0400, owned by us, no loose link)."""
    data = read_private_key(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError(f"{path}: only Ed25519 and ECDSA P-256 keys are supported")


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Load every PEM certificate in a file (in file order)."""
    data = read_bounded(path, "certificate file")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{path} holds no valid PEM certificate") from exc
    return certs


def load_station_signer(key_path: Path, chain_path: Path) -> KeySigner:
    """The station signer from its key file (0600) and chain file (PEM, leaf first)."""
    key = load_private_key(key_path, "station key")
    chain = tuple(load_certificates(chain_path))
    return KeySigner(key, chain)
