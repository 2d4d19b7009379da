"""Issuing and verifying certificates: independent verifiers, the bad corpus, the ledger."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certs_fixtures as fx
import make_corpus
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk as jw_jwk
from jwcrypto import jws as jw_jws

from wipeagent.certs import (
    KeySigner,
    check_sequence,
    dev_trust_root,
    ensure_dev_pki,
    issue_certificate,
    jws,
    load_station_signer,
    pki,
    verify_certificate,
)
from wipeagent.errors import CertificateError, ConfigError
from wipeagent.models import CheckKind, CheckStatus, Outcome

CORPUS = Path(__file__).parent / "corpus"
MANIFEST = json.loads((CORPUS / "expected.json").read_text())
# The corpus is frozen in time: judge it as of a fixed "now".
CORPUS_NOW = datetime(2026, 12, 1, tzinfo=UTC)


def roots(name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((CORPUS / name).read_bytes())


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeySigner, x509.Certificate]:
    directory = tmp_path_factory.mktemp("devpki")
    return ensure_dev_pki(directory, station_id="bench-01"), dev_trust_root(directory)


@pytest.fixture(scope="module")
def p256(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeySigner, x509.Certificate, Path]:
    d = tmp_path_factory.mktemp("p256")
    ca = pki.init_ca(d / "ca", organisation="Acme Refurb", key_type="p256")
    req = pki.new_station(d, station_id="bench-01", organisation="Acme Refurb", key_type="p256")
    chain = pki.sign_station(
        req.csr, ca_key_path=ca.key, ca_cert_path=ca.cert, out_path=d / "station.pem"
    )
    return load_station_signer(req.key, chain), pki.load_trust_roots(ca.cert)[0], d


@pytest.mark.parametrize("fast", [True, False], ids=["fast-payload-path", "strict-path"])
@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_corpus_file_gets_its_reason(name: str, fast: bool) -> None:
    expected = MANIFEST["files"][name]
    data = (CORPUS / name).read_bytes()
    with fx.payload_path(fast):
        if expected["reason"] == "ok":
            verified = verify_certificate(data, trust_roots=roots(expected["trust"]),
                                          now=CORPUS_NOW)
            assert verified.sha256 == hashlib.sha256(data).hexdigest()
            return
        with pytest.raises(CertificateError) as caught:
            verify_certificate(data, trust_roots=roots(expected["trust"]), now=CORPUS_NOW)
    assert caught.value.reason == expected["reason"]


@pytest.mark.parametrize("name", sorted(MANIFEST["sequences"]))
def test_corpus_sequence_problems(name: str) -> None:
    expected = MANIFEST["sequences"][name]
    verified = [
        verify_certificate(p.read_bytes(), trust_roots=roots(expected["trust"]), now=CORPUS_NOW)
        for p in sorted((CORPUS / name).glob("*.jws"))
    ]
    assert [p.kind for p in check_sequence(verified)] == expected["problems"]


def test_corpus_regenerates_byte_for_byte(tmp_path: Path) -> None:
    make_corpus.generate(tmp_path)
    committed = sorted(p.relative_to(CORPUS) for p in CORPUS.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == fresh
    for rel in committed:
        assert (CORPUS / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_wrong_trust_root_rejects_valid_certificate() -> None:
    data = (CORPUS / "valid-ed25519.jws").read_bytes()
    with pytest.raises(CertificateError) as caught:
        verify_certificate(data, trust_roots=roots("other-root.pem"), now=CORPUS_NOW)
    assert caught.value.reason == "untrusted_root"


def _jwcrypto_verify(data: bytes, leaf: x509.Certificate, alg: str) -> dict[str, object]:
    pem = leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = jw_jws.JWS()
    token.allowed_algs = [alg]
    token.deserialize(data.decode("ascii"))
    token.verify(jw_jwk.JWK.from_pem(pem))
    header = token.jose_header
    assert isinstance(header, dict)
    assert header["alg"] == alg and header["typ"] == "wipeagent-cert+jws"
    # x5c leaf is the certificate the key came from (leaf first, standard base64 DER).
    assert base64.b64decode(header["x5c"][0]) == leaf.public_bytes(serialization.Encoding.DER)
    return json.loads(token.payload)  # type: ignore[no-any-return]


def test_issue_ed25519_verifies_with_jwcrypto_and_ours(
    dev: tuple[KeySigner, x509.Certificate],
) -> None:
    signer, root = dev
    now = datetime.now(UTC).replace(microsecond=0)
    issued = issue_certificate(
        fx.erased_record(),
        signer,
        sequence=1,
        previous_hash=None,
        issued_at=now,
        development=True,
        verification_url="https://verify.example/c",
    )
    payload = _jwcrypto_verify(issued.data, signer.chain[0], "EdDSA")
    assert payload == issued.payload
    assert payload["development"] is True
    assert payload["device"]["serial"] == "R58M1234ABC"
    assert payload["sanitization"]["category"] == "purge"
    assert payload["sanitization"]["standards"] == ["NIST SP 800-88 Rev. 2", "IEEE 2883-2022"]
    assert payload["verification"] == payload["verification"] | {
        "technique_completed": "confirmed",
        "data_unrecoverable": "confirmed",
    }
    assert payload["locks"]["google_frp"]["state"] == "not_present"
    assert payload["locks"]["activation_lock"]["state"] == "not_applicable"
    assert payload["locks"]["mdm"]["state"] == "not_present"
    verified = verify_certificate(issued.data, trust_roots=[root])
    assert verified.certificate_id == issued.certificate_id
    assert verified.sha256 == issued.sha256 == hashlib.sha256(issued.data).hexdigest()
    assert verified.issued_at == now
    # certificate id is a UUIDv7 carrying the issue time
    assert issued.certificate_id[14] == "7"
    assert int(issued.certificate_id.replace("-", "")[:12], 16) == int(now.timestamp() * 1000)


def test_issue_es256_verifies_with_jwcrypto_and_ours(
    p256: tuple[KeySigner, x509.Certificate, Path],
) -> None:
    signer, root, _ = p256
    assert signer.alg == "ES256"
    issued = issue_certificate(
        fx.not_erased_record(),
        signer,
        sequence=1,
        previous_hash=None,
        development=False,
        verification_url=None,
    )
    payload = _jwcrypto_verify(issued.data, signer.chain[0], "ES256")
    assert payload["outcome"]["result"] == "not_erased"
    assert payload["locks"]["activation_lock"]["state"] == "present"
    assert payload["development"] is False
    assert verify_certificate(issued.data, trust_roots=[root]).alg == "ES256"


def test_jwcrypto_refuses_tampered_certificate(dev: tuple[KeySigner, x509.Certificate]) -> None:
    signer, _ = dev
    issued = issue_certificate(
        fx.erased_record(),
        signer,
        sequence=1,
        previous_hash=None,
        development=True,
        verification_url=None,
    )
    outer = json.loads(issued.data)
    outer["payload"] = (
        outer["payload"][:-2] + ("A" if outer["payload"][-2] != "A" else "B") + outer["payload"][-1]
    )
    with pytest.raises(Exception, match=r"(?i)verif"):
        _jwcrypto_verify(json.dumps(outer).encode(), signer.chain[0], "EdDSA")


def test_openssl_verifies_station_chain(
    p256: tuple[KeySigner, x509.Certificate, Path], tmp_path: Path
) -> None:
    signer, _, d = p256
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(signer.chain[0].public_bytes(serialization.Encoding.PEM))
    ok = subprocess.run(
        ["openssl", "verify", "-CAfile", str(d / "ca" / "ca.pem"), str(leaf)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("OK")
    wrong = subprocess.run(
        ["openssl", "verify", "-CAfile", str(CORPUS / "root.pem"), str(leaf)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert wrong.returncode != 0


def test_openssl_verifies_dev_chain_and_corpus_chain(
    dev: tuple[KeySigner, x509.Certificate], tmp_path: Path
) -> None:
    signer, root = dev
    ca = tmp_path / "ca.pem"
    ca.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(signer.chain[0].public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(leaf)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the station certificate carries the extensions the format promises
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(leaf)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    ).stdout
    assert "Digital Signature" in text and "CA:FALSE" in text
    assert "1.3.6.1.5.5.7.3.36" in text or "Document Signing" in text


def test_station_key_with_loose_mode_is_refused(
    p256: tuple[KeySigner, x509.Certificate, Path],
) -> None:
    _, _, d = p256
    key = d / "station.key"
    assert os.stat(key).st_mode & 0o777 == 0o600
    os.chmod(key, 0o640)
    try:
        with pytest.raises(ConfigError) as caught:
            load_station_signer(key, d / "station.pem")
        assert "chmod 600" in caught.value.hint
    finally:
        os.chmod(key, 0o600)
    load_station_signer(key, d / "station.pem")


def test_pki_refuses_to_overwrite(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, organisation="Acme")
    with pytest.raises(ConfigError):
        pki.init_ca(tmp_path, organisation="Acme")


def test_key_and_chain_must_match(dev: tuple[KeySigner, x509.Certificate], tmp_path: Path) -> None:
    req = pki.new_station(tmp_path, station_id="bench-02")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in dev[0].chain))
    with pytest.raises(ConfigError, match="does not match"):
        load_station_signer(req.key, chain)


def test_refuses_to_issue_erased_without_passing_verification(
    dev: tuple[KeySigner, x509.Certificate],
) -> None:
    signer, _ = dev
    failing = fx.erased_record(
        verification=(
            fx.check("erase.reset_observed", CheckKind.VERIFICATION),
            fx.check("erase.canary_files_gone", CheckKind.VALIDATION, CheckStatus.FAIL),
        )
    )
    with pytest.raises(CertificateError) as caught:
        issue_certificate(
            failing, signer, sequence=1, previous_hash=None, development=True, verification_url=None
        )
    assert caught.value.reason == "inconsistent_payload"
    nothing = fx.erased_record(verification=())
    with pytest.raises(CertificateError):
        issue_certificate(
            nothing, signer, sequence=1, previous_hash=None, development=True, verification_url=None
        )
    # Exceptions never excuse a validation that could not run: the data is not known gone.
    with_errors = fx.erased_record(
        outcome=Outcome.ERASED_WITH_EXCEPTIONS,
        verification=(
            fx.check("erase.reset_observed", CheckKind.VERIFICATION),
            fx.check("erase.canary_files_gone", CheckKind.VALIDATION, CheckStatus.ERROR),
        ),
        exceptions=("canary check could not run: storage not mounted",),
    )
    with pytest.raises(CertificateError) as caught:
        issue_certificate(
            with_errors, signer, sequence=1, previous_hash=None, development=True,
            verification_url=None,
        )
    assert "validation" in caught.value.message


def test_development_signer_cannot_issue_production(
    dev: tuple[KeySigner, x509.Certificate],
) -> None:
    with pytest.raises(CertificateError) as caught:
        issue_certificate(
            fx.erased_record(),
            dev[0],
            sequence=1,
            previous_hash=None,
            development=False,
            verification_url=None,
        )
    assert caught.value.reason == "development_mismatch"


class _BrokenSigner:
    """A signer whose token returns garbage: the self-check must catch it."""

    def __init__(self, inner: KeySigner) -> None:
        self.inner = inner
        self.alg, self.kid, self.chain = inner.alg, inner.kid, inner.chain

    def sign(self, data: bytes) -> bytes:
        good = self.inner.sign(data)
        return bytes([good[0] ^ 1]) + good[1:]


def test_self_check_catches_bad_signature(dev: tuple[KeySigner, x509.Certificate]) -> None:
    with pytest.raises(CertificateError) as caught:
        issue_certificate(
            fx.erased_record(),
            _BrokenSigner(dev[0]),
            sequence=1,
            previous_hash=None,
            development=True,
            verification_url=None,
        )
    assert caught.value.reason == "bad_signature"


def test_rotation_keeps_old_certificates_verifiable(tmp_path: Path) -> None:
    """Station certificate 1 expires, station certificate 2 takes over; both ledgers verify."""
    ca_key = pki.generate_key("ed25519")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ca = pki.make_ca_certificate(
        ca_key,
        organisation="Acme",
        common_name="Acme root",
        not_before=start,
        not_after=start + timedelta(days=3650),
    )
    signers = []
    for i, (a, b) in enumerate(
        [
            (start, start + timedelta(days=100)),
            (start + timedelta(days=90), start + timedelta(days=400)),
        ]
    ):
        key = pki.generate_key("ed25519" if i == 0 else "p256")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench-01")]))
            .sign(
                key,
                None
                if i == 0
                else __import__(
                    "cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]
                ).SHA256(),
            )
        )
        cert = pki.issue_station_certificate(csr, ca_key, ca, not_before=a, not_after=b)
        signers.append(KeySigner(key, (cert, ca)))
    first = issue_certificate(
        fx.erased_record(),
        signers[0],
        sequence=1,
        previous_hash=None,
        issued_at=start + timedelta(days=50),
        development=False,
        verification_url=None,
    )
    second = issue_certificate(
        fx.erased_record(),
        signers[1],
        sequence=2,
        previous_hash=first.sha256,
        issued_at=start + timedelta(days=200),
        development=False,
        verification_url=None,
    )
    later = start + timedelta(days=300)  # the first station certificate is long expired
    verified = [verify_certificate(c.data, trust_roots=[ca], now=later) for c in (first, second)]
    assert check_sequence(verified) == []
    assert verified[0].alg == "EdDSA" and verified[1].alg == "ES256"
    # but the old key cannot issue after its certificate expired
    with pytest.raises(CertificateError) as caught:
        issue_certificate(
            fx.erased_record(),
            signers[0],
            sequence=3,
            previous_hash=second.sha256,
            issued_at=start + timedelta(days=200),
            development=False,
            verification_url=None,
        )
    assert caught.value.reason == "cert_expired"


def test_issued_ledger_is_clean_and_detects_missing(
    dev: tuple[KeySigner, x509.Certificate],
) -> None:
    signer, root = dev
    prev: str | None = None
    verified = []
    for seq in range(1, 5):
        issued = issue_certificate(
            fx.erased_record(session=f"s-{seq}"),
            signer,
            sequence=seq,
            previous_hash=prev,
            development=True,
            verification_url=None,
        )
        prev = issued.sha256
        verified.append(verify_certificate(issued.data, trust_roots=[root]))
    assert check_sequence(verified) == []
    assert check_sequence(verified + verified[:1]) == []  # the same document twice is fine
    problems = check_sequence(verified[:2] + verified[3:])
    assert [(p.kind, p.sequence) for p in problems] == [("gap", 3)]


def test_oversized_and_deep_inputs_are_malformed(dev: tuple[KeySigner, x509.Certificate]) -> None:
    root = dev[1]
    with pytest.raises(CertificateError) as caught:
        verify_certificate(b" " * (600 * 1024), trust_roots=[root])
    assert caught.value.reason == "too_large"
    with pytest.raises(CertificateError) as caught:
        verify_certificate(b"[" * 100_000, trust_roots=[root])
    assert caught.value.reason == "malformed"
    dup = b'{"payload":"e30","payload":"e30","protected":"e30","signature":""}'
    with pytest.raises(CertificateError) as caught:
        verify_certificate(dup, trust_roots=[root])
    assert caught.value.reason == "malformed"


def test_naive_datetime_is_refused(dev: tuple[KeySigner, x509.Certificate]) -> None:
    with pytest.raises(CertificateError) as caught:
        issue_certificate(
            fx.erased_record(),
            dev[0],
            sequence=1,
            previous_hash=None,
            issued_at=datetime(2026, 11, 20, 10, 0),
            development=True,
            verification_url=None,
        )
    assert caught.value.reason == "inconsistent_record"


# Chain cases OpenSSL judges too: our RFC 5280 path check must agree with it.
OPENSSL_CHAIN_CASES = [
    name for name, e in MANIFEST["files"].items()
    if e["reason"] in ("path_length", "name_constraints", "unknown_critical_extension")
    or name in ("valid-v2-intermediate.jws", "valid-v2-name-constraints.jws",
                "valid-v2-ed25519.jws", "valid-v2-es256.jws")
]


@pytest.mark.parametrize("name", sorted(OPENSSL_CHAIN_CASES))
def test_openssl_agrees_on_chain_constraints(name: str, tmp_path: Path) -> None:
    expected = MANIFEST["files"][name]
    parsed = jws.parse((CORPUS / name).read_bytes())
    chain = [x509.load_der_x509_certificate(d) for d in parsed.x5c_der]
    trust = roots(expected["trust"])
    middle = [c for c in chain[1:] if c not in trust]
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in middle))
    issued = jws.parse_payload(parsed.payload_bytes)["issued_at"]
    at = int(datetime.fromisoformat(issued.replace("Z", "+00:00")).timestamp())
    command = ["openssl", "verify", "-x509_strict", "-attime", str(at),
               "-CAfile", str(CORPUS / expected["trust"])]
    if middle:
        command += ["-untrusted", str(untrusted)]
    done = subprocess.run([*command, str(leaf)], capture_output=True, check=False, text=True,
                          timeout=30)
    said = done.stdout + done.stderr
    if expected["reason"] == "ok":
        assert done.returncode == 0, said
    else:  # refused, and for the same cause
        assert done.returncode != 0, said
        assert OPENSSL_SAYS[expected["reason"]] in said, said


OPENSSL_SAYS = {
    "path_length": "path length constraint exceeded",
    "name_constraints": "subtree violation",
    "unknown_critical_extension": "unhandled critical extension",
}


def test_station_ids_are_ascii_and_bind_the_dev_pki(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ASCII"):
        pki.new_station(tmp_path / "cyr", station_id="b\u0435nch-01")
    with pytest.raises(ConfigError, match="ASCII"):
        pki.new_station(tmp_path / "space", station_id="bench 01")
    first = ensure_dev_pki(tmp_path / "dev", station_id="bench-01")
    assert pki.station_id_of(first.chain[0]) == "bench-01"
    again = ensure_dev_pki(tmp_path / "dev", station_id="bench-01")
    assert again.kid == first.kid  # reloaded, not remade
    other = ensure_dev_pki(tmp_path / "dev", station_id="bench-02")
    assert pki.station_id_of(other.chain[0]) == "bench-02"
    assert other.chain[-1] == first.chain[-1]  # same development CA


def test_agent_refuses_a_station_certificate_of_another_station(
    p256: tuple[KeySigner, x509.Certificate, Path], tmp_path: Path
) -> None:
    from wipeagent.assemble import Paths, load_signer
    from wipeagent.config import AgentConfig

    _, _, d = p256  # issued to bench-01
    config = AgentConfig.model_validate({
        "station": {"id": "bench-02"},
        "certificates": {"key": str(d / "station.key"), "chain": str(d / "station.pem")},
    })
    with pytest.raises(ConfigError, match="bench-01"):
        load_signer(config, Paths(tmp_path))
    config = AgentConfig.model_validate({
        "station": {"id": "bench-01"},
        "certificates": {"key": str(d / "station.key"), "chain": str(d / "station.pem")},
    })
    signer, _ = load_signer(config, Paths(tmp_path))
    assert pki.station_id_of(signer.chain[0]) == "bench-01"
