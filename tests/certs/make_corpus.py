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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

sys.path.insert(0, str(Path(__file__).resolve().parent))

import certs_fixtures as fx

from wipeagent.certs import jws
from wipeagent.certs.payload import build_payload, schema, validate_payload
from wipeagent.certs.pki import issue_station_certificate, make_ca_certificate
from wipeagent.certs.signer import SigningKey, alg_for_key, b64url, jwk_thumbprint, raw_sign

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
