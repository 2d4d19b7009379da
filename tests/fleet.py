"""Organisations and stations with real PKI, for the platform tests and the fleet benchmark.

    org = Org.create(tmp / "acme", "Acme Refurb")        # root CA (key kept here)
    bench = org.station(tmp / "b1", "bench-01")          # station signing key + TLS client
    cert = bench.issue()                                  # next certificate of its ledger
    bench.issue(sequence=5, previous_hash=None)           # or any ledger position (forks...)

Every certificate is issued by `wipeagent.certs.issue.issue_certificate`, the agent's own
issuer (signed, schema-checked, self-verified), so the platform sees what a bench sends.
"""

from __future__ import annotations

import itertools
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wipeagent.certs.issue import IssuedCertificate, issue_certificate
from wipeagent.certs.pki import (
    CA_CERT,
    CA_KEY,
    STATION_CHAIN,
    STATION_CSR,
    init_ca,
    issue_station_certificate,
    load_trust_roots,
    new_station,
    sign_certificate,
)
from wipeagent.certs.signer import (
    KeySigner,
    load_certificates,
    load_private_key,
    load_station_signer,
)
from wipeagent.models import (
    Booking,
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    EraseRecord,
    IdentifierSource,
    NistCategory,
    Outcome,
    Platform,
    SessionRecord,
    StationInfo,
)
from wipeagent.uplink.tls import client_context, new_client_key, sign_client

_serials = itertools.count(1)


def luhn_imei(body14: str) -> str:
    """A 15-digit IMEI with its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(body14)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return body14 + str((10 - total % 10) % 10)


def _check(id_: str, kind: CheckKind, status: CheckStatus = CheckStatus.PASS) -> CheckResult:
    return CheckResult(id=id_, title=id_.replace("_", " "), kind=kind, status=status,
                       method=f"checked {id_}", detail="", evidence={})


def phone_record(station: StationInfo, *, serial: str, imei: str,
                 outcome: Outcome = Outcome.ERASED, model: str = "Pixel 8",
                 manufacturer: str = "Google", marketing_name: str = "Pixel 8",
                 ended_at: datetime | None = None,
                 booking: Booking | None = None) -> SessionRecord:
    """A finished session: an Android phone erased (Purge) and verified, or refused;
    `booking`: the intake entry it matched (the certificate's intake section)."""
    end = ended_at or datetime.now(UTC) - timedelta(seconds=5)
    start = end - timedelta(minutes=9)
    identity = DeviceIdentity(
        platform=Platform.ANDROID, manufacturer=manufacturer, model=model,
        marketing_name=marketing_name, serial=serial, imeis=(imei,),
        imei_source=IdentifierSource.PHONE, os_name="Android",
        os_version="14", storage_capacity_bytes=128_000_000_000,
        encryption=EncryptionType.FILE_BASED)
    if outcome is Outcome.NOT_ERASED:
        return SessionRecord(
            session_id=f"s-{serial}", slot="usb-1-1.2", station=station, operator="tech-1",
            started_at=start, ended_at=end, identity=identity, outcome=outcome,
            reasons=("a Google account is signed in",), booking=booking)
    return SessionRecord(
        session_id=f"s-{serial}", slot="usb-1-1.2", station=station, operator="tech-1",
        started_at=start, ended_at=end, identity=identity,
        erase=EraseRecord(
            plan=ErasePlan(method_id="android.testharness",
                           method="adb shell cmd testharness enable",
                           technique="cryptographic erase via factory reset",
                           category=NistCategory.PURGE),
            started_at=start + timedelta(minutes=2), ended_at=start + timedelta(minutes=7)),
        verification=(_check("erase.reset_observed", CheckKind.VERIFICATION),
                      _check("erase.canary_files_gone", CheckKind.VALIDATION)),
        outcome=outcome, category=NistCategory.PURGE, booking=booking)


@dataclass
class Station:
    """A bench: its signing key and chain, its TLS client certificate, its ledger head."""

    org: Org
    station_id: str
    signer: KeySigner
    client_cert: Path
    client_key: Path
    sequence: int = 0
    last_hash: str | None = None
    issued: list[IssuedCertificate] = field(default_factory=list)

    @property
    def info(self) -> StationInfo:
        return StationInfo(station_id=self.station_id, site="Test site",
                           organisation=self.org.name, tool_version="0.1.0")

    def issue(self, *, serial: str | None = None, imei: str | None = None,
              outcome: Outcome = Outcome.ERASED, sequence: int | None = None,
              previous_hash: str | type[Ellipsis] | None = ...,
              issued_at: datetime | None = None,
              verification_url: str | None = None,
              booking: str | None = None) -> IssuedCertificate:
        """The next certificate (or one at `sequence`/`previous_hash`, for ledger tests:
        then the station's own head does not move); `booking`: the booking reference of
        the intake entry the phone matched by its IMEI."""
        n = next(_serials)
        serial = serial or f"SER{n:08d}"
        imei = imei or luhn_imei(f"35{n:012d}")
        explicit = sequence is not None
        seq = sequence if sequence is not None else self.sequence + 1
        prev = self.last_hash if previous_hash is ... else previous_hash
        assert prev is None or isinstance(prev, str)
        matched = None if booking is None else Booking(
            reference=booking, matched_by="imei", identifier=imei, source="platform")
        record = phone_record(self.info, serial=serial, imei=imei, outcome=outcome,
                              booking=matched)
        cert = issue_certificate(record, self.signer, sequence=seq, previous_hash=prev,
                                 issued_at=issued_at, development=self.org.development,
                                 verification_url=verification_url)
        if not explicit:
            self.sequence, self.last_hash = seq, cert.sha256
        self.issued.append(cert)
        return cert

    def client_ssl(self, server_ca: Path | None) -> ssl.SSLContext:
        """The uplink's TLS context for this station."""
        return client_context(ca=server_ca, cert=self.client_cert, key=self.client_key)


@dataclass
class Org:
    """An organisation root CA (its key on disk here, as on the offline CA machine)."""

    directory: Path
    name: str
    development: bool

    @classmethod
    def create(cls, directory: Path, name: str, *, development: bool = False,
               key_type: str = "ed25519") -> Org:
        # Back-dated, so tests can issue certificates "days ago".
        init_ca(directory / "ca", organisation=name, development=development,
                key_type=key_type, now=datetime.now(UTC) - timedelta(days=60))
        return cls(directory, name, development)

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca" / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca" / CA_KEY

    @property
    def root(self) -> x509.Certificate:
        return load_trust_roots(self.ca_cert)[0]

    def station(self, station_id: str, *, client_id: str | None = None,
                key_type: str = "ed25519", not_before: datetime | None = None,
                not_after: datetime | None = None) -> Station:
        """A new station; its TLS client certificate names `client_id` (default: the
        station id itself, as it must)."""
        directory = self.directory / "stations" / station_id
        new_station(directory, station_id=station_id, organisation=self.name,
                    key_type=key_type)
        csr = x509.load_pem_x509_csr((directory / STATION_CSR).read_bytes())
        ca_cert = load_certificates(self.ca_cert)[0]
        cert = issue_station_certificate(
            csr, load_private_key(self.ca_key), ca_cert,
            not_before=not_before or datetime.now(UTC) - timedelta(days=30),
            not_after=not_after)
        (directory / STATION_CHAIN).write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, ca_cert)))
        signer = load_station_signer(directory / "station.key", directory / STATION_CHAIN)
        tls = new_client_key(directory / "uplink", station_id=client_id or station_id)
        issue = sign_client if client_id is None else sign_client_unchecked
        cert = issue(tls.csr, ca_key_path=self.ca_key, ca_cert_path=self.ca_cert,
                     out_path=directory / "uplink" / "uplink.pem")
        return Station(self, station_id, signer, cert, tls.key)


def sign_client_unchecked(csr_path: Path, *, ca_key_path: Path, ca_cert_path: Path,
                          out_path: Path) -> Path:
    """A TLS client certificate for whatever CN the CSR names, as a careless (or older)
    CA would issue it: `pki` refuses non-ASCII station ids, but a receiver must refuse
    such a client on its own (tests of look-alike identities)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    ca_cert = load_certificates(ca_cert_path)[0]
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=30), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
    )
    cert = sign_certificate(builder, load_private_key(ca_key_path))
    out_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                  for c in (cert, ca_cert)))
    return out_path


def resign(station: Station, cert: IssuedCertificate, **changes: object) -> bytes:
    """`cert`'s payload with top-level `changes`, signed again by the station: a genuine
    signature over other content under the same certificate id."""
    import json

    from cryptography.hazmat.primitives import serialization

    from wipeagent.certs import jws
    from wipeagent.certs.signer import b64url

    payload = {**json.loads(json.dumps(cert.payload)), **changes}
    header = jws.encode_header(
        station.signer.alg, station.signer.kid,
        [c.public_bytes(serialization.Encoding.DER) for c in station.signer.chain])
    body = jws.canonical_json(payload)
    signing_input = jws.signing_input(b64url(jws.canonical_json(header)), b64url(body))
    return jws.serialize(header, body, station.signer.sign(signing_input))
