"""Regenerate the bad-certificate corpus in tests/certs/corpus/ deterministically.

    .venv/bin/python tests/certs/make_corpus.py [OUT_DIR]

Keys come from fixed seeds, times and serial numbers are fixed, Ed25519 is deterministic
and ECDSA uses RFC 6979 nonces, so the same code always writes the same bytes (a test
checks the committed files match). expected.json names, for every file, the trust root
to verify it against and the reason it must be rejected with ("ok" = valid); for every
sequence folder, the ChainProblem kinds check_sequence must report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).resolve().parent))

import certs_fixtures as fx

from wipeagent.certs import jws
from wipeagent.certs.payload import build_payload, schema, validate_payload
from wipeagent.certs.pki import (
    EKU_DOCUMENT_SIGNING,
    issue_station_certificate,
    make_ca_certificate,
    sign_certificate,
)
from wipeagent.certs.signer import (
    P256_ORDER,
    SigningKey,
    alg_for_key,
    b64url,
    jwk_thumbprint,
    raw_sign,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
Y2026 = datetime(2026, 1, 1, tzinfo=UTC)
Y2036 = datetime(2036, 1, 1, tzinfo=UTC)


def seeded_key(seed: str, kind: str = "ed25519") -> SigningKey:
    digest = hashlib.sha256(seed.encode()).digest()
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(digest)
    return ec.derive_private_key(int.from_bytes(digest, "big") % (2**255), ec.SECP256R1())


def serial_of(seed: str) -> int:
    return int.from_bytes(hashlib.sha256(b"serial" + seed.encode()).digest()[:16], "big") >> 1


@dataclass
class Station:
    key: SigningKey
    chain: list[x509.Certificate]

    @property
    def alg(self) -> str:
        return alg_for_key(self.key)

    @property
    def kid(self) -> str:
        return jwk_thumbprint(self.key.public_key())


def make_root(
    seed: str, kind: str = "ed25519", development: bool = False
) -> tuple[SigningKey, x509.Certificate]:
    key = seeded_key(seed, kind)
    cert = make_ca_certificate(
        key,
        organisation="Acme Refurb",
        common_name=f"corpus root {seed}",
        not_before=Y2026,
        not_after=Y2036,
        development=development,
        serial=serial_of(seed),
    )
    return key, cert


def make_station(
    seed: str,
    root: tuple[SigningKey, x509.Certificate],
    kind: str = "ed25519",
    not_before: datetime = Y2026,
    not_after: datetime = Y2036 - timedelta(days=1),
) -> Station:
    key = seeded_key(seed, kind)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench-01")]))
        .sign(
            key,
            None
            if isinstance(key, ed25519.Ed25519PrivateKey)
            else __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256(),
        )
    )
    cert = issue_station_certificate(
        csr,
        root[0],
        root[1],
        not_before=not_before,
        not_after=not_after,
        serial=serial_of(seed),
    )
    return Station(key, [cert, root[1]])


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(root["$defs"][ref.rsplit("/", 1)[1]], root)
    return node


def prune_to_schema(value: Any, node: dict[str, Any], root: dict[str, Any]) -> Any:
    """`value` with every object member its (closed) schema does not know dropped: how a
    version-1 payload looked, whatever sections later versions add."""
    node = _resolve(node, root)
    if isinstance(value, dict):
        branches = [node, *(_resolve(b, root) for b in node.get("oneOf", []))]
        for branch in branches:
            props = branch.get("properties")
            if props is not None:
                return {k: prune_to_schema(v, props[k], root) for k, v in value.items()
                        if k in props}
        return value
    if isinstance(value, list):
        items = node.get("items")
        return [prune_to_schema(v, items, root) for v in value] if items else value
    return value


def as_version(body: dict[str, Any], version: int) -> dict[str, Any]:
    """A payload as the agent of certificate `version` wrote it (older: sections pruned)."""
    root = schema(version)
    pruned: dict[str, Any] = prune_to_schema(body, root, root)
    pruned["version"] = version
    return pruned


def payload(
    seq: int = 1,
    prev: str | None = None,
    *,
    cid_seed: str = "c1",
    issued: datetime = fx.T0 + timedelta(minutes=10),
    development: bool = False,
    record: Any = None,
    version: int = 1,
) -> dict[str, Any]:
    digest = hashlib.sha256(cid_seed.encode()).hexdigest()
    ms = int(issued.timestamp() * 1000)
    cid = (
        f"{ms:012x}"[:8]
        + "-"
        + f"{ms:012x}"[8:]
        + "-7"
        + digest[:3]
        + "-8"
        + digest[3:6]
        + "-"
        + digest[6:18]
    )
    body = build_payload(
        record or fx.erased_record(),
        certificate_id=cid,
        issued_at=issued,
        sequence=seq,
        previous_hash=prev,
        development=development,
        verification_url="https://verify.example/c",
    )
    # The first corpus files were written by the version-1 agent and must stay verifiable
    # byte for byte; newer cases use the current version.
    return as_version(body, version)


def sign(
    station: Station,
    body: dict[str, Any] | bytes,
    *,
    header: dict[str, Any] | None = None,
    validate: bool = True,
    chain: list[x509.Certificate] | None = None,
) -> bytes:
    if isinstance(body, dict):
        if validate:
            validate_payload(body)
        body = jws.canonical_json(body)
    hdr = header or jws.encode_header(
        station.alg,
        station.kid,
        [c.public_bytes(serialization.Encoding.DER) for c in (chain or station.chain)],
    )
    p64 = b64url(jws.canonical_json(hdr))
    b64 = b64url(body)
    sig = raw_sign(station.key, jws.signing_input(p64, b64))
    return jws.serialize(hdr, body, sig)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def custom_cert(
    seed: str,
    subject_cn: str,
    key: Any,
    issuer: tuple[Any, x509.Certificate] | None,
    *,
    ca: bool,
    path_length: int | None = None,
    key_usage: dict[str, bool] | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    extra: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
) -> x509.Certificate:
    """Any certificate the verifier must judge, built field by field (pki.py would refuse
    most of these). `issuer` None: self-signed by `key`."""
    name = x509.Name([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, subject_cn),
        x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Acme Refurb"),
    ])
    usage = {
        "digital_signature": False, "content_commitment": False, "key_encipherment": False,
        "data_encipherment": False, "key_agreement": False, "key_cert_sign": ca,
        "crl_sign": ca, "encipher_only": False, "decipher_only": False,
    }
    if not ca:
        usage["digital_signature"] = True
    usage.update(key_usage or {})
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[1].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(serial_of(seed))
        .not_valid_before(Y2026)
        .not_valid_after(Y2036 - timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
    )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()),
            critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    signing_key = issuer[0] if issuer else key
    return sign_certificate(builder, signing_key)


def sign_p384(key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate],
              body: dict[str, Any]) -> bytes:
    """A JWS whose station key is P-384 (which no station may have), signed ES384-style."""
    kid = b64url(hashlib.sha256(b"p384").digest())  # well-formed, so the key is judged
    hdr = jws.encode_header("ES256", kid,
                            [c.public_bytes(serialization.Encoding.DER) for c in chain])
    p64 = b64url(jws.canonical_json(hdr))
    b64 = b64url(jws.canonical_json(body))
    der = key.sign(jws.signing_input(p64, b64),
                   ec.ECDSA(hashes.SHA384(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return jws.serialize(hdr, jws.canonical_json(body), signature)


def add_verifier_cases(add: Any, st: Station, root: tuple[SigningKey, x509.Certificate],
                       out: Path) -> None:
    """Issue 10's forgeries and crashes: each a file with the reason it must get."""
    docsign = [EKU_DOCUMENT_SIGNING]

    # Path length: the root says pathLen 0, yet an intermediate CA sits below it.
    inter_key = seeded_key("intermediate")
    inter = custom_cert("intermediate", "corpus intermediate", inter_key, root, ca=True,
                        path_length=0)
    leaf_key = seeded_key("station-under-intermediate")
    leaf = custom_cert("station-under-intermediate", "bench-01", leaf_key,
                       (inter_key, inter), ca=False, eku=docsign)
    add("intermediate-under-pathlen0-root.jws",
        sign(Station(leaf_key, [leaf, inter, root[1]]), payload(version=2)), "path_length")
    # The same shape under a root that allows one intermediate is fine.
    root1_key = seeded_key("root-pathlen1")
    root1 = custom_cert("root-pathlen1", "corpus root pathlen 1", root1_key, None, ca=True,
                        path_length=1)
    (out / "root-pathlen1.pem").write_bytes(pem(root1))
    inter1 = custom_cert("intermediate-1", "corpus intermediate 1", inter_key,
                         (root1_key, root1), ca=True, path_length=0)
    leaf1 = custom_cert("station-under-intermediate-1", "bench-01", leaf_key,
                        (inter_key, inter1), ca=False, eku=docsign)
    add("valid-v2-intermediate.jws",
        sign(Station(leaf_key, [leaf1, inter1, root1]), payload(version=2)), "ok",
        "root-pathlen1.pem")
    # Two intermediates under the pathLen 1 root: the upper one allows none below it.
    inter2_key = seeded_key("intermediate-2")
    inter2 = custom_cert("intermediate-2", "corpus intermediate 2", inter2_key,
                         (inter_key, inter1), ca=True)
    leaf2 = custom_cert("station-under-intermediate-2", "bench-01", leaf_key,
                        (inter2_key, inter2), ca=False, eku=docsign)
    add("two-intermediates-under-pathlen0.jws",
        sign(Station(leaf_key, [leaf2, inter2, inter1, root1]), payload(version=2)),
        "path_length", "root-pathlen1.pem")
    # An intermediate whose EKU is for TLS only may not vouch for document signing.
    inter_tls = custom_cert("intermediate-tls", "corpus intermediate tls", inter_key,
                            (root1_key, root1), ca=True, path_length=0,
                            eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    leaf_tls = custom_cert("station-under-tls", "bench-01", leaf_key, (inter_key, inter_tls),
                           ca=False, eku=docsign)
    add("intermediate-eku-tls-only.jws",
        sign(Station(leaf_key, [leaf_tls, inter_tls, root1]), payload(version=2)),
        "key_usage", "root-pathlen1.pem")

    # Key usage the station must not have, and a critical extension nobody understands.
    st_key = seeded_key("station-custom")
    cert_sign = custom_cert("station-keycertsign", "bench-01", st_key, root, ca=False,
                            eku=docsign, key_usage={"key_cert_sign": True})
    add("station-may-sign-certificates.jws",
        sign(Station(st_key, [cert_sign, root[1]]), payload(version=2)), "key_usage")
    critical = custom_cert(
        "station-critical", "bench-01", st_key, root, ca=False, eku=docsign,
        extra=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                           b"\x05\x00"), True)],
    )
    add("unknown-critical-extension.jws",
        sign(Station(st_key, [critical, root[1]]), payload(version=2)),
        "unknown_critical_extension")

    # Name constraints on the root: excluded, not permitted, and satisfied.
    def nc_root(seed: str, nc: x509.NameConstraints) -> tuple[SigningKey, x509.Certificate]:
        key = seeded_key(seed)
        cert = custom_cert(seed, f"corpus {seed}", key, None, ca=True, path_length=0,
                           extra=[(nc, True)])
        (out / f"{seed}.pem").write_bytes(pem(cert))
        return key, cert

    bench01 = x509.DirectoryName(x509.Name([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "BENCH-01")]))  # matched case-blind
    bench99 = x509.DirectoryName(x509.Name([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench-99")]))
    for seed, nc, reason in (
        ("root-nc-excluded", x509.NameConstraints(None, [bench01]), "name_constraints"),
        ("root-nc-permitted-other", x509.NameConstraints([bench99], None), "name_constraints"),
        ("root-nc-ok", x509.NameConstraints([x509.DNSName("example.com")], [bench99]), "ok"),
    ):
        nc_key, nc_cert = nc_root(seed, nc)
        leaf_nc = custom_cert(f"station-{seed}", "bench-01", st_key, (nc_key, nc_cert),
                              ca=False, eku=docsign)
        name = "valid-v2-name-constraints.jws" if reason == "ok" else f"{seed}.jws"
        add(name, sign(Station(st_key, [leaf_nc, nc_cert]), payload(version=2)), reason,
            f"{seed}.pem")

    # A station key on P-384: refused as unsupported (it once raised OverflowError).
    p384 = ec.derive_private_key(
        int.from_bytes(hashlib.sha256(b"p384").digest(), "big"), ec.SECP384R1())
    leaf384 = custom_cert("station-p384", "bench-01", p384, root, ca=False, eku=docsign)
    add("p384-station-key.jws", sign_p384(p384, [leaf384, root[1]], payload(version=2)),
        "unsupported_key")

    # Station binding: another station of the organisation signing in bench-01's name.
    other_key = seeded_key("station-bench-02")
    bench02 = custom_cert("station-bench-02", "bench-02", other_key, root, ca=False,
                          eku=docsign)
    add("other-station-signs.jws",
        sign(Station(other_key, [bench02, root[1]]), payload(version=2)), "station_mismatch")
    cyrillic = "b\u0435nch-01"  # a Cyrillic "е" in place of the Latin "e"
    lookalike = payload(version=1)  # version 1 still allowed any station id string
    lookalike["custody"]["station_id"] = lookalike["chain"]["station_id"] = cyrillic
    add("lookalike-station-id-v1.jws", sign(st, lookalike, validate=False), "station_mismatch")
    cyr_cert = custom_cert("station-cyrillic", cyrillic, st_key, root, ca=False, eku=docsign)
    add("lookalike-station-certificate-v1.jws",
        sign(Station(st_key, [cyr_cert, root[1]]), lookalike, validate=False),
        "station_mismatch")

    # The outcome rule on the checks themselves, not the summaries.
    no_checks = payload(version=2)
    no_checks["verification"]["checks"] = []  # summaries still say "confirmed"
    add("erased-without-checks.jws", sign(st, no_checks, validate=False),
        "inconsistent_payload")
    skipped = payload(version=2)
    skipped["verification"]["checks"][1]["status"] = "skipped"
    skipped["outcome"]["result"] = "erased_with_exceptions"
    skipped["outcome"]["exceptions"] = ["canary check skipped"]
    add("erased-validation-skipped.jws", sign(st, skipped, validate=False),
        "inconsistent_payload")
    warned = payload(version=2)
    warned["verification"]["checks"][0]["status"] = "warn"  # needs erased_with_exceptions
    add("erased-despite-warning.jws", sign(st, warned, validate=False), "inconsistent_payload")
    manual = payload(version=2)
    manual["sanitization"]["manual"] = True  # a manual reset is an exception, not listed
    add("manual-reset-not-an-exception.jws", sign(st, manual, validate=False),
        "inconsistent_payload")
    locks = payload(record=fx.not_erased_record(), version=2)
    locks["locks"]["activation_lock"]["state"] = "not_present"  # its Find My check failed
    add("lock-state-lies.jws", sign(st, locks, validate=False), "inconsistent_payload")
    summary = payload(version=2)
    summary["diagnostics"]["summary"]["fail"] = 3
    add("diagnostics-summary-lies.jws", sign(st, summary, validate=False),
        "inconsistent_payload")
    moved = payload(version=2)
    moved["issued_at"] = "2026-11-20T09:11:00Z"  # the UUIDv7 says 09:10:00
    add("id-time-mismatch.jws", sign(st, moved, validate=False), "inconsistent_payload")

    # Times that are not real: each once raised ValueError out of the verifier.
    for name, where, value in (
        ("impossible-date.jws", ("issued_at",), "2026-02-30T09:10:00Z"),
        ("month-13.jws", ("issued_at",), "2026-13-20T09:10:00Z"),
        ("leap-second.jws", ("issued_at",), "2026-11-20T09:10:60Z"),
        ("hour-24.jws", ("sanitization", "ended_at"), "2026-11-20T24:00:00Z"),
        ("session-day-zero.jws", ("custody", "session_started_at"), "2026-11-00T09:00:00Z"),
    ):
        bad = payload(version=2)
        target = bad
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
        add(name, sign(st, bad, validate=False), "invalid_time")

    # A station certificate with one extension twice (its authority key identifier's OID
    # turned into the subject key identifier's): once a DuplicateExtension out of verify.
    der = st.chain[0].public_bytes(serialization.Encoding.DER)
    aki, ski = b"\x06\x03\x55\x1d\x23", b"\x06\x03\x55\x1d\x0e"
    assert der.count(aki) == 1
    twice = jws.encode_header(st.alg, st.kid, [der.replace(aki, ski),
                                               st.chain[1].public_bytes(serialization.Encoding.DER)])
    add("duplicate-extension.jws", sign(st, payload(version=2), header=twice), "chain_invalid")

    # A version that is a boolean (true == 1 in Python), and a payload that is no object.
    boolean = payload(version=1)
    boolean["version"] = True
    add("version-true.jws", sign(st, boolean, validate=False), "schema_invalid")
    add("payload-not-object.jws", sign(st, b"[1,2,3]"), "schema_invalid")


def generate(out: Path) -> dict[str, Any]:
    """Write the corpus to `out`; returns the manifest (also written as expected.json)."""
    out.mkdir(parents=True, exist_ok=True)
    root = make_root("root")
    root_p256 = make_root("root-p256", "p256")
    other_root = make_root("other-root")
    dev_root = make_root("dev-root", development=True)
    st = make_station("station", root)
    st_p256 = make_station("station-p256", root_p256, "p256")
    st_other = make_station("station-other", other_root)
    st_dev = make_station("station-dev", dev_root)
    st_expired = make_station("station-expired", root, not_after=fx.T0)
    st_future = make_station("station-future", root, not_before=fx.T0 + timedelta(days=30))
    roots = {
        "root.pem": root[1],
        "root-p256.pem": root_p256[1],
        "other-root.pem": other_root[1],
        "dev-root.pem": dev_root[1],
    }
    for name, cert in roots.items():
        (out / name).write_bytes(pem(cert))

    files: dict[str, tuple[bytes, str, str]] = {}

    def add(name: str, data: bytes, reason: str, trust: str = "root.pem") -> None:
        files[name] = (data, reason, trust)

    good = sign(st, payload())
    add("valid-ed25519.jws", good, "ok")
    add("valid-es256.jws", sign(st_p256, payload()), "ok", "root-p256.pem")
    add("valid-dev.jws", sign(st_dev, payload(development=True)), "ok", "dev-root.pem")
    add("valid-not-erased-ios.jws", sign(st, payload(record=fx.not_erased_record())), "ok")
    add("valid-v2-ed25519.jws", sign(st, payload(version=2)), "ok")
    add("valid-v2-es256.jws", sign(st_p256, payload(version=2)), "ok", "root-p256.pem")
    add("valid-v2-not-erased-ios.jws",
        sign(st, payload(record=fx.not_erased_record(), version=2)), "ok")
    failed_handoff = fx.erased_record(
        outcome=fx.Outcome.ERASED_WITH_EXCEPTIONS, handoff=fx.restore_handoff(failed=True),
        exceptions=("hand-off failed: USB debugging: the phone still answers ADB",))
    add("valid-v2-handoff-failed.jws",
        sign(st, payload(record=failed_handoff, version=2)), "ok")
    silent = payload(version=2)
    silent["handoff"] = payload(record=failed_handoff, version=2)["handoff"]
    add("handoff-failed-but-erased.jws", sign(st, silent, validate=False),
        "inconsistent_payload")
    not_erased_handoff = payload(record=fx.not_erased_record(), version=2)
    not_erased_handoff["handoff"] = payload(version=2)["handoff"]
    add("handoff-on-not-erased.jws", sign(st, not_erased_handoff, validate=False),
        "inconsistent_payload")
    unknown_version = payload(version=2)
    unknown_version["version"] = 3
    add("unknown-version.jws", sign(st, unknown_version, validate=False), "schema_invalid")

    outer = json.loads(good)
    body = bytearray(jws.b64url_decode(outer["payload"], "payload"))
    body[body.index(b'"erased"') + 1] ^= 0x01  # "erased" -> "drased": one flipped bit
    add(
        "flipped-payload-byte.jws",
        json.dumps({**outer, "payload": b64url(bytes(body))}, separators=(",", ":")).encode(),
        "bad_signature",
    )

    hdr = jws.encode_header(
        "none", st.kid, [c.public_bytes(serialization.Encoding.DER) for c in st.chain]
    )
    add(
        "alg-none.jws",
        json.dumps(
            {
                "payload": outer["payload"],
                "protected": b64url(jws.canonical_json(hdr)),
                "signature": "",
            },
            separators=(",", ":"),
        ).encode(),
        "unsupported_alg",
    )

    # HS256 "confusion": HMAC keyed with the station's public key, which a naive verifier
    # that trusts the header's alg would accept.
    hdr = {**hdr, "alg": "HS256"}
    p64 = b64url(jws.canonical_json(hdr))
    mac = hmac.new(
        pem(st.chain[0]), jws.signing_input(p64, outer["payload"]), hashlib.sha256
    ).digest()
    add(
        "hs256-confusion.jws",
        json.dumps(
            {"payload": outer["payload"], "protected": p64, "signature": b64url(mac)},
            separators=(",", ":"),
        ).encode(),
        "unsupported_alg",
    )

    add("wrong-ca.jws", sign(st_other, payload()), "untrusted_root")
    add("expired-station-cert.jws", sign(st_expired, payload()), "cert_expired")
    add("not-yet-valid-station-cert.jws", sign(st_future, payload()), "cert_not_yet_valid")
    add(
        "chain-wrong-order.jws",
        sign(st, payload(), chain=[st.chain[1], st.chain[0]]),
        "chain_order",
    )
    add("ca-signs-directly.jws", sign(Station(root[0], [root[1]]), payload()), "key_usage")

    missing = payload()
    del missing["device"]["serial"]
    add("missing-field.jws", sign(st, missing, validate=False), "schema_invalid")
    extra = payload()
    extra["outcome"]["note"] = "unexpected"
    add("unknown-field.jws", sign(st, extra, validate=False), "schema_invalid")

    unverified = payload()
    unverified["verification"]["technique_completed"] = "not_established"
    add(
        "erased-without-verification.jws",
        sign(st, unverified, validate=False),
        "inconsistent_payload",
    )
    add(
        "development-not-marked.jws",
        sign(st_dev, payload()),
        "development_mismatch",
        "dev-root.pem",
    )

    base_hdr = jws.encode_header(
        st.alg, st.kid, [c.public_bytes(serialization.Encoding.DER) for c in st.chain]
    )
    add(
        "alg-key-mismatch.jws",
        sign(st, payload(), header={**base_hdr, "alg": "ES256"}),
        "alg_mismatch",
    )
    add(
        "kid-mismatch.jws",
        sign(st, payload(), header={**base_hdr, "kid": st_other.kid}),
        "kid_mismatch",
    )
    add(
        "jwk-header-injection.jws",
        sign(st, payload(), header={**base_hdr, "jwk": {"kty": "OKP"}}),
        "bad_header",
    )
    add(
        "unprotected-header.jws",
        json.dumps({**outer, "header": {"alg": "none"}}, separators=(",", ":")).encode(),
        "malformed",
    )
    add("not-json.jws", b"eyJhbGciOiJFZERTQSJ9.e30.c2ln", "malformed")
    add(
        "issued-in-future.jws",
        sign(st, payload(issued=datetime(2035, 1, 1, tzinfo=UTC))),
        "issued_in_future",
    )

    add_verifier_cases(add, st, root, out)

    # ES256 malleability: the twin (R, n - S) of a genuine low-S signature.
    genuine = json.loads(files["valid-v2-es256.jws"][0])
    sig = jws.b64url_decode(genuine["signature"], "signature")
    twin_s = P256_ORDER - int.from_bytes(sig[32:], "big")
    twin = {**genuine, "signature": b64url(sig[:32] + twin_s.to_bytes(32, "big"))}
    add("es256-high-s-twin.jws", json.dumps(twin, separators=(",", ":")).encode(),
        "signature_not_canonical", "root-p256.pem")

    # Other spellings of one genuine certificate: each would be a byte-different twin.
    v2 = files["valid-v2-ed25519.jws"][0]
    parts = json.loads(v2)
    add("whitespace-twin.jws", json.dumps(parts, separators=(", ", ": ")).encode(),
        "not_canonical")
    add("member-order-twin.jws",
        json.dumps(dict(reversed(list(parts.items()))), separators=(",", ":")).encode(),
        "not_canonical")
    add("escaped-twin.jws", v2.replace(b'"payload"', b'"\\u0070ayload"'), "not_canonical")
    sig = parts["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]  # same bytes, other text
    add("signature-spare-bits-twin.jws",
        json.dumps({**parts, "signature": spare}, separators=(",", ":")).encode(),
        "not_canonical")
    standard = sig.replace("-", "+").replace("_", "/")
    if standard != sig:  # standard base64's letters for the same bytes
        add("signature-standard-alphabet-twin.jws",
            json.dumps({**parts, "signature": standard}, separators=(",", ":")).encode(),
            "malformed")
    add("payload-utf16.jws", sign(st, jws.canonical_json(payload(version=2)).decode()
                                   .encode("utf-16")), "malformed")

    manifest: dict[str, Any] = {"files": {}, "sequences": {}}
    for name, (data, reason, trust) in files.items():
        (out / name).write_bytes(data)
        manifest["files"][name] = {"reason": reason, "trust": trust}

    def ledger(name: str, docs: list[bytes], kinds: list[str]) -> None:
        folder = out / name
        folder.mkdir(exist_ok=True)
        for i, data in enumerate(docs, 1):
            (folder / f"{i:02d}.jws").write_bytes(data)
        manifest["sequences"][name] = {"trust": "root.pem", "problems": kinds}

    def chain_of(n: int, prefix: str) -> list[bytes]:
        docs: list[bytes] = []
        prev: str | None = None
        for seq in range(1, n + 1):
            data = sign(
                st,
                payload(
                    seq, prev, cid_seed=f"{prefix}{seq}", issued=fx.T0 + timedelta(minutes=10 * seq)
                ),
            )
            docs.append(data)
            prev = hashlib.sha256(data).hexdigest()
        return docs

    good_chain = chain_of(4, "g")
    ledger("seq-good", good_chain, [])
    ledger("seq-gap", [good_chain[0], good_chain[1], good_chain[3]], ["gap"])
    h1 = hashlib.sha256(good_chain[0]).hexdigest()
    fork = sign(st, payload(2, h1, cid_seed="fork2", issued=fx.T0 + timedelta(minutes=25)))
    ledger("seq-fork", [good_chain[0], good_chain[1], fork], ["fork"])
    h2 = hashlib.sha256(good_chain[1]).hexdigest()
    dup = sign(st, payload(3, h2, cid_seed="g2", issued=fx.T0 + timedelta(minutes=20)))
    ledger("seq-duplicate-id", [good_chain[0], good_chain[1], dup], ["duplicate_id"])
    nowhere = hashlib.sha256(b"a certificate nobody holds").hexdigest()
    bad_link = sign(st, payload(3, nowhere, cid_seed="link3", issued=fx.T0 + timedelta(minutes=30)))
    ledger("seq-broken-link", [good_chain[0], good_chain[1], bad_link], ["broken_link"])

    (out / "expected.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
