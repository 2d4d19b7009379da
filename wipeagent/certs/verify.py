"""Verification of wipe certificates, one at a time and as a station ledger.

`verify_certificate` answers "is this certificate genuine and well-formed?" Every failure
is a `CertificateError` whose `reason` is one of REASONS (documented in
docs/certificate.md). `check_sequence` answers "is this set of genuine certificates a
complete, unforked ledger per station?".
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wipeagent.certs import jws
from wipeagent.certs.payload import load_payload
from wipeagent.certs.pki import EKU_DOCUMENT_SIGNING, is_development, station_id_of
from wipeagent.certs.signer import (
    ALG_ES256,
    alg_for_key,
    is_low_s,
    jwk_thumbprint,
    raw_verify,
)
from wipeagent.errors import CertificateError

# Every reason code verify_certificate can raise (stable; documented in certificate.md).
REASONS = {
    "too_large": "the file is larger than a certificate can be",
    "malformed": "not a flattened JWS JSON object, or bad base64url / JSON",
    "not_canonical": "another spelling of a certificate (whitespace, order, base64 bits)",
    "unsupported_alg": "alg is not EdDSA or ES256 (e.g. none, HS256)",
    "bad_header": "protected header has unexpected or invalid members",
    "chain_invalid": "an x5c entry is not a valid X.509 certificate (or bad extensions)",
    "unsupported_key": "the station key is neither Ed25519 nor ECDSA P-256",
    "alg_mismatch": "alg does not match the station certificate's key type",
    "kid_mismatch": "kid is not the thumbprint of the station certificate's key",
    "signature_not_canonical": "an ES256 signature with a high S (a malleated twin)",
    "bad_signature": "the signature does not verify with the station certificate's key",
    "chain_order": "x5c is not leaf first",
    "chain_broken": "a certificate in x5c is not signed by the next one",
    "untrusted_root": "the chain does not end at a trusted root",
    "key_usage": "a certificate is not allowed to do what it did (KU/EKU/basicConstraints)",
    "path_length": "a CA's pathLenConstraint is exceeded by the CAs below it",
    "name_constraints": "a name in the chain is outside a CA's name constraints",
    "unknown_critical_extension": "a certificate has a critical extension not understood",
    "station_mismatch": "the payload's station id is not the signing certificate's",
    "cert_not_yet_valid": "a chain certificate was not yet valid at the issue time",
    "cert_expired": "a chain certificate had expired at the issue time",
    "issued_in_future": "the issue time lies in the future",
    "invalid_time": "a time is not a real RFC 3339 UTC time (2026-02-30, 24:00, :60)",
    "schema_invalid": "the payload does not match the JSON Schema (e.g. missing field)",
    "inconsistent_payload": "the payload breaks a rule beyond the schema",
    "development_mismatch": "signed under a development CA but not marked development",
    "unhandled_input": "input no explicit rule covers (refused; a verifier bug: report it)",
}

# How far a bench clock may run ahead of the verifier's before a certificate is "future".
CLOCK_SKEW = timedelta(minutes=5)

# Extensions whose meaning the path check below implements; any other extension marked
# critical makes the certificate unusable (RFC 5280 section 4.2).
_UNDERSTOOD = (
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.NameConstraints,
    x509.SubjectAlternativeName,
    x509.SubjectKeyIdentifier,
    x509.AuthorityKeyIdentifier,
)


class VerifiedCertificate(NamedTuple):
    """A certificate that passed every check; `payload` is the validated signed payload.

    (Immutable like a frozen dataclass; a NamedTuple because one is made per certificate
    verified, in a tenth of a frozen dataclass's time.)
    """

    certificate_id: str
    sha256: str
    issued_at: datetime
    station_id: str
    sequence: int
    previous_hash: str | None
    development: bool
    alg: str
    kid: str
    chain: tuple[x509.Certificate, ...]
    payload: dict[str, Any]

    @property
    def outcome(self) -> str:
        """"erased", "erased_with_exceptions" or "not_erased"."""
        result: str = self.payload["outcome"]["result"]
        return result

    def __repr__(self) -> str:  # the payload left out: kilobytes of JSON
        return (f"VerifiedCertificate(certificate_id={self.certificate_id!r}, "
                f"station_id={self.station_id!r}, sequence={self.sequence!r}, "
                f"sha256={self.sha256!r})")


@dataclass(frozen=True)
class _TrustedChain:
    certs: tuple[x509.Certificate, ...]
    windows: tuple[tuple[datetime, datetime], ...]
    development: bool
    kid: str
    alg: str
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    station_id: str


E = TypeVar("E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[E]) -> E | None:
    """An extension's value, None when absent (the extensions parsed in _load)."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _load(der: bytes) -> x509.Certificate:
    """DER X.509 with every extension parseable; chain_invalid otherwise."""
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.extensions  # noqa: B018 - parse now: duplicate or broken extensions raise here
        cert.not_valid_before_utc  # noqa: B018
        cert.not_valid_after_utc  # noqa: B018
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
            x509.InvalidVersion) as exc:  # (the last three are not ValueErrors)
        raise CertificateError("chain_invalid", f"an x5c entry is not valid X.509: {exc}"[:300]
                               ) from exc
    return cert


def _is_ca(cert: x509.Certificate) -> bool:
    bc = _ext(cert, x509.BasicConstraints)
    return bc is not None and bc.ca


def _check_leaf_usage(leaf: x509.Certificate) -> None:
    ku = _ext(leaf, x509.KeyUsage)
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if ku is None or eku is None:
        raise CertificateError("key_usage", "station certificate lacks KU or EKU")
    if not ku.digital_signature:
        raise CertificateError("key_usage", "station certificate lacks digitalSignature")
    if ku.key_cert_sign or ku.crl_sign:
        # RFC 5280 4.2.1.3: keyCertSign only with cA; a station never signs certificates.
        raise CertificateError("key_usage", "station certificate may sign certificates")
    if EKU_DOCUMENT_SIGNING not in eku:
        raise CertificateError("key_usage", "station certificate lacks id-kp-documentSigning")


def _check_ca_usage(cert: x509.Certificate) -> None:
    if not _is_ca(cert):
        raise CertificateError("key_usage", "an issuing certificate is not a CA")
    # RFC 5280 4.2.1.3: a CA certificate MUST carry keyUsage; it must allow keyCertSign.
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not ku.key_cert_sign:
        raise CertificateError("key_usage", "an issuing certificate lacks keyCertSign")
    # An EKU on a CA restricts what it may certify (as OpenSSL and browsers treat it).
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is not None and not (
        EKU_DOCUMENT_SIGNING in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    ):
        raise CertificateError("key_usage", "an issuing CA may not certify document signing")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


# --- name constraints (RFC 5280 4.2.1.10), for the forms a station chain can carry ----

def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> frozenset[tuple[str, str]]:
    # RFC 5280 7.1 asks for RFC 4518 string preparation; case folding and whitespace
    # collapsing is its core, and errs towards "matches" (so towards excluded).
    return frozenset((a.oid.dotted_string, _fold(str(a.value))) for a in rdn)


def _host_within(host: str, base: str) -> bool:
    host, base = host.lower().rstrip("."), base.lower()
    if base.startswith("."):
        return host.endswith(base)
    return host == base or host.endswith("." + base)


def _within(name: x509.GeneralName, tree: x509.GeneralName) -> bool:
    if isinstance(name, x509.DirectoryName) and isinstance(tree, x509.DirectoryName):
        have = [_rdn_key(r) for r in name.value.rdns]
        want = [_rdn_key(r) for r in tree.value.rdns]
        return have[: len(want)] == want
    if isinstance(name, x509.DNSName) and isinstance(tree, x509.DNSName):
        return _host_within(name.value, tree.value) if tree.value else True
    if isinstance(name, x509.RFC822Name) and isinstance(tree, x509.RFC822Name):
        if "@" in tree.value:
            return name.value.lower() == tree.value.lower()
        return _host_within(name.value.rpartition("@")[2], tree.value)
    if isinstance(name, x509.UniformResourceIdentifier) and isinstance(
        tree, x509.UniformResourceIdentifier
    ):
        host = urlsplit(name.value).hostname or ""
        return bool(host) and _host_within(host, tree.value)
    if isinstance(name, x509.IPAddress) and isinstance(tree, x509.IPAddress):
        net = tree.value
        addr = name.value
        if isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network) and isinstance(
            addr, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            return addr.version == net.version and addr in net
    return False


_CONSTRAINABLE = (x509.DirectoryName, x509.DNSName, x509.RFC822Name,
                  x509.UniformResourceIdentifier, x509.IPAddress)


def _names(cert: x509.Certificate) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if len(cert.subject) > 0:
        names.append(x509.DirectoryName(cert.subject))
    for email in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        names.append(x509.RFC822Name(str(email.value)))
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is not None:
        names.extend(san)
    return names


def _check_name_constraints(nc: x509.NameConstraints, below: Sequence[x509.Certificate]) -> None:
    permitted = list(nc.permitted_subtrees or ())
    excluded = list(nc.excluded_subtrees or ())
    for tree in permitted + excluded:
        if not isinstance(tree, _CONSTRAINABLE):
            raise CertificateError(
                "name_constraints", f"unsupported name constraint form {type(tree).__name__}"
            )
    for cert in below:
        for name in _names(cert):
            if any(_within(name, tree) for tree in excluded):
                raise CertificateError("name_constraints", f"{name.value!s:.80} is excluded")
            same_form = [t for t in permitted if type(t) is type(name)]
            if same_form and not any(_within(name, tree) for tree in same_form):
                raise CertificateError("name_constraints", f"{name.value!s:.80} not permitted")


def _check_path(path: Sequence[x509.Certificate]) -> None:
    """RFC 5280 section 6.1 constraints over the whole path, leaf first, anchor last.

    The trust anchor's own constraints are enforced too (a root with pathLen 0 allows no
    intermediate CA), as OpenSSL does.
    """
    for position, cert in enumerate(path):
        for extension in cert.extensions:
            if extension.critical and not isinstance(extension.value, _UNDERSTOOD):
                raise CertificateError(
                    "unknown_critical_extension",
                    f"critical extension {extension.oid.dotted_string} is not understood",
                )
        if position == 0:
            continue
        _check_ca_usage(cert)
        bc = _ext(cert, x509.BasicConstraints)
        assert bc is not None  # _check_ca_usage
        # Intermediate CAs between this CA and the leaf; self-issued ones (key rollover)
        # do not count (RFC 5280 6.1.4 (l)).
        between = sum(1 for c in path[1:position] if not _self_issued(c))
        if bc.path_length is not None and between > bc.path_length:
            raise CertificateError(
                "path_length",
                f"a CA allows {bc.path_length} intermediate CA(s) below it, the chain has "
                f"{between}",
            )
        nc = _ext(cert, x509.NameConstraints)
        if nc is not None:
            # Self-issued intermediates are exempt (6.1.4 (b)); the leaf never is.
            below = [c for i, c in enumerate(path[:position]) if i == 0 or not _self_issued(c)]
            _check_name_constraints(nc, below)


class Verifier:
    """Verifies certificates against fixed trust roots; caches chain results for batches.

    Every certificate from one station carries the same x5c, so the X.509 work is done
    once per distinct chain; per certificate only its own signature, times and payload
    are checked.
    """

    def __init__(self, trust_roots: Sequence[x509.Certificate]) -> None:
        self._roots = list(trust_roots)
        self._root_ders = {r.public_bytes(serialization.Encoding.DER) for r in self._roots}
        self._cache: dict[tuple[bytes, ...], _TrustedChain | CertificateError] = {}
        self._lock = threading.Lock()

    def _build_chain(self, ders: tuple[bytes, ...]) -> _TrustedChain:
        certs = [_load(der) for der in ders]
        leaf = certs[0]
        if _is_ca(leaf):
            # A CA first means the chain is upside down (or a CA signed directly: refused).
            has_leaf = any(not _is_ca(c) for c in certs[1:])
            raise CertificateError(
                "chain_order" if has_leaf else "key_usage",
                "x5c must start with the station (non-CA) certificate",
            )
        for child, parent in itertools.pairwise(certs):
            if not _issued_by(child, parent):
                upside_down = _issued_by(parent, child)
                raise CertificateError(
                    "chain_order" if upside_down else "chain_broken",
                    "x5c certificates do not chain leaf first",
                )
        last = certs[-1]
        last_der = ders[-1]
        anchor: x509.Certificate | None = None
        if last_der in self._root_ders:
            anchor = last
        else:
            for root in self._roots:
                if _issued_by(last, root):
                    anchor = root
                    break
        if anchor is None:
            raise CertificateError(
                "untrusted_root", "the chain does not end at a trusted root",
                hint="check --trust points at your organisation's root CA",
            )
        full = certs if anchor is last else [*certs, anchor]
        _check_path(full)
        _check_leaf_usage(leaf)
        try:
            key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateError("unsupported_key", "station key cannot be loaded") from exc
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise CertificateError("unsupported_key", "station key is neither Ed25519 nor EC")
        alg = alg_for_key(key)  # unsupported_key for P-384 and other curves
        station_id = station_id_of(leaf)
        if station_id is None:
            raise CertificateError(
                "station_mismatch",
                "the station certificate's subject has no single ASCII station id (CN)",
            )
        return _TrustedChain(
            certs=tuple(certs),
            windows=tuple((c.not_valid_before_utc, c.not_valid_after_utc) for c in full),
            development=any(is_development(c) for c in full),
            kid=jwk_thumbprint(key),
            alg=alg,
            key=key,
            station_id=station_id,
        )

    def _chain(self, ders: tuple[bytes, ...]) -> _TrustedChain:
        with self._lock:
            cached = self._cache.get(ders)
        if cached is None:
            try:
                cached = self._build_chain(ders)
            except CertificateError as exc:
                cached = exc
            with self._lock:
                if len(self._cache) > 1024:  # bounded: a batch has few distinct stations
                    self._cache.clear()
                self._cache[ders] = cached
        if isinstance(cached, CertificateError):
            raise CertificateError(cached.reason, cached.message, hint=cached.hint)
        return cached

    def verify(self, data: bytes, *, now: datetime | None = None) -> VerifiedCertificate:
        """Verify one stored certificate; CertificateError(reason, message) if it fails.

        Never raises anything else: input that no explicit rule covers is refused as
        "unhandled_input" (tests assert that this never happens for known inputs).
        """
        try:
            return self._verify(data, now)
        except CertificateError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
                RecursionError, UnicodeError, UnsupportedAlgorithm, InvalidSignature) as exc:
            raise CertificateError(
                "unhandled_input", f"refused: {type(exc).__name__}: {exc}"[:300]
            ) from exc

    def _verify(self, data: bytes, now: datetime | None) -> VerifiedCertificate:
        parsed = jws.parse(data)
        chain = self._chain(parsed.x5c_der)
        if parsed.alg != chain.alg:
            raise CertificateError("alg_mismatch", f"alg {parsed.alg} but key needs {chain.alg}")
        if parsed.kid != chain.kid:
            raise CertificateError("kid_mismatch", "kid does not name the station key")
        if parsed.alg == ALG_ES256 and len(parsed.signature) == 64 and not is_low_s(
            parsed.signature
        ):
            raise CertificateError(
                "signature_not_canonical", "ES256 signature with a high S (not canonical)"
            )
        try:
            raw_verify(chain.key, parsed.signature, parsed.signing_input)
        except InvalidSignature as exc:
            raise CertificateError("bad_signature", "signature verification failed") from exc
        payload, issued_at = load_payload(parsed.payload_bytes)
        station_id = payload["chain"]["station_id"]
        # Exact comparison; the station certificate's id is ASCII, so no look-alike passes.
        if station_id != chain.station_id:
            raise CertificateError(
                "station_mismatch",
                f"payload names station {station_id[:64]!r}, signed by {chain.station_id!r}",
                hint="each station signs only in its own name (station certificate CN)",
            )
        for not_before, not_after in chain.windows:
            if issued_at < not_before:
                raise CertificateError(
                    "cert_not_yet_valid", "a chain certificate was not yet valid at issue time"
                )
            if issued_at > not_after:
                raise CertificateError(
                    "cert_expired", "a chain certificate had expired at issue time"
                )
        if issued_at > (now or datetime.now(issued_at.tzinfo)) + CLOCK_SKEW:
            raise CertificateError("issued_in_future", f"issued at {payload['issued_at']}")
        if chain.development and not payload["development"]:
            raise CertificateError(
                "development_mismatch", "signed by a development CA but not marked development"
            )
        return VerifiedCertificate(
            certificate_id=payload["certificate_id"],
            sha256=hashlib.sha256(data).hexdigest(),
            issued_at=issued_at,
            station_id=station_id,
            sequence=payload["chain"]["sequence"],
            previous_hash=payload["chain"]["previous_hash"],
            development=payload["development"],
            alg=parsed.alg,
            kid=parsed.kid,
            chain=chain.certs,
            payload=payload,
        )


_verifiers: dict[frozenset[bytes], Verifier] = {}


def verifier_for(trust_roots: Sequence[x509.Certificate]) -> Verifier:
    """A (reused) Verifier for these trust roots, so repeated calls share the chain cache."""
    key = frozenset(r.public_bytes(serialization.Encoding.DER) for r in trust_roots)
    found = _verifiers.get(key)
    if found is None:
        if len(_verifiers) > 16:
            _verifiers.clear()
        found = _verifiers[key] = Verifier(trust_roots)
    return found


def verify_certificate(
    data: bytes, *, trust_roots: list[x509.Certificate], now: datetime | None = None
) -> VerifiedCertificate:
    """Verify signature, chain to a trust root, validity at issue time, key usage, schema."""
    return verifier_for(trust_roots).verify(data, now=now)


class LedgerEntry(Protocol):
    """What check_sequence needs of a certificate (VerifiedCertificate has it all)."""

    @property
    def certificate_id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def station_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def previous_hash(self) -> str | None: ...


@dataclass(frozen=True)
class LedgerRecord:
    """A verified certificate's ledger fields alone (e.g. returned by a worker process)."""

    certificate_id: str
    sha256: str
    station_id: str
    sequence: int
    previous_hash: str | None


@dataclass(frozen=True)
class ChainProblem:
    """One problem in a set of certificates. kind: gap, duplicate_id, fork, broken_link."""

    kind: str
    station_id: str
    sequence: int | None
    certificate_ids: tuple[str, ...]
    message: str


def check_sequence(certs: Iterable[LedgerEntry]) -> list[ChainProblem]:
    """Ledger problems in a set of verified certificates (empty list: none found).

    - duplicate_id: one certificate id on two different documents (the very same bytes
      twice is not a problem);
    - fork: two different certificates with one station and sequence number, or two
      certificates naming the same predecessor;
    - gap: sequence numbers missing between the lowest and highest held for a station;
    - broken_link: previous_hash of sequence n+1 is not the sha256 of sequence n.
    The set may start anywhere (a verifier need not hold a station's first certificate).
    """
    unique: dict[str, LedgerEntry] = {}
    for cert in certs:
        unique.setdefault(cert.sha256, cert)
    problems: list[ChainProblem] = []
    by_id: dict[str, list[LedgerEntry]] = defaultdict(list)
    by_station: dict[str, dict[int, list[LedgerEntry]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for cert in unique.values():
        by_id[cert.certificate_id].append(cert)
        by_station[cert.station_id][cert.sequence].append(cert)
    for cid, same in sorted(by_id.items()):
        if len(same) > 1:
            problems.append(
                ChainProblem("duplicate_id", same[0].station_id, None, (cid,),
                             f"certificate id {cid} appears on {len(same)} different documents")
            )
    for station, seqs in sorted(by_station.items()):
        parents: dict[str, list[LedgerEntry]] = defaultdict(list)
        for group in seqs.values():
            for cert in group:
                if cert.previous_hash is not None:
                    parents[cert.previous_hash].append(cert)
            if len(group) > 1:
                problems.append(
                    ChainProblem("fork", station, group[0].sequence,
                                 tuple(sorted(c.certificate_id for c in group)),
                                 f"{len(group)} certificates share sequence {group[0].sequence}")
                )
        for prev, children in sorted(parents.items()):
            seq_set = {c.sequence for c in children}
            if len(children) > 1 and len(seq_set) > 1:
                problems.append(
                    ChainProblem("fork", station, None,
                                 tuple(sorted(c.certificate_id for c in children)),
                                 f"{len(children)} certificates name predecessor {prev[:12]}")
                )
        ordered = sorted(seqs)
        for low, high in itertools.pairwise(ordered):
            if high != low + 1:
                problems.append(
                    ChainProblem("gap", station, low + 1, (),
                                 f"sequence {low + 1}..{high - 1} missing")
                )
                continue
            expected = {c.sha256 for c in seqs[low]}
            for cert in seqs[high]:
                if cert.previous_hash not in expected:
                    problems.append(
                        ChainProblem("broken_link", station, high, (cert.certificate_id,),
                                     f"sequence {high} does not link to sequence {low}")
                    )
    return problems
