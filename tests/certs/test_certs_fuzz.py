"""Property: whatever is done to a valid certificate, the verifier accepts it or raises
CertificateError with a documented reason, never anything else, and never accepts an
"erased" the outcome rule would not give.

Mutations (hypothesis): raw bytes of the file; JSON values anywhere in the payload (then
re-signed with the corpus station key, so the mutation reaches the checks behind the
signature); the protected header's members (re-signed); the DER bytes of an x5c
certificate (re-signed). Seeds are the corpus's valid certificates and keys
(tests/certs/make_corpus.py regenerates them from fixed seeds).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import make_corpus
import pytest
from certs_fixtures import payload_path
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wipeagent.certs import jws
from wipeagent.certs.signer import b64url, raw_sign
from wipeagent.certs.verify import REASONS, VerifiedCertificate, Verifier
from wipeagent.enums import CheckKind, CheckStatus, NistCategory, Outcome
from wipeagent.errors import CertificateError
from wipeagent.outcome import decide

CORPUS = Path(__file__).parent / "corpus"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
FUZZ = settings(
    # WIPEAGENT_FUZZ_EXAMPLES=5000 for a deeper search by hand; the suite runs 150 each.
    max_examples=int(os.environ.get("WIPEAGENT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# (file, trust root, key seed, key kind) of valid corpus certificates to mutate.
SEEDS = [
    ("valid-v2-ed25519.jws", "root.pem", "station", "ed25519"),
    ("valid-v2-es256.jws", "root-p256.pem", "station-p256", "p256"),
    ("valid-v2-not-erased-ios.jws", "root.pem", "station", "ed25519"),
    ("valid-ed25519.jws", "root.pem", "station", "ed25519"),
    ("valid-v2-intermediate.jws", "root-pathlen1.pem", "station-under-intermediate", "ed25519"),
]


def _verifier(root: str) -> Verifier:
    return Verifier(x509.load_pem_x509_certificates((CORPUS / root).read_bytes()))


VERIFIERS = {root: _verifier(root) for root in {s[1] for s in SEEDS}}


class _Check:
    def __init__(self, c: dict[str, Any]) -> None:
        self.kind = CheckKind(c["kind"])
        self.status = CheckStatus(c["status"])
        self.title = c["title"]
        self.detail = c["detail"]


class _Plan:
    def __init__(self, san: dict[str, Any]) -> None:
        self.manual = san["manual"]
        self.category = NistCategory(san["category"])


def _verdict(data: bytes, root: str, *, fast: bool) -> VerifiedCertificate | str:
    with payload_path(fast):
        try:
            return VERIFIERS[root].verify(data, now=NOW)
        except CertificateError as exc:
            return exc.reason


def judge(data: bytes, root: str) -> VerifiedCertificate | None:
    """Verify; the property holds for every outcome but an unexplained one, and the
    payload's fast path (schema_decoder.py) and strict path give the same verdict."""
    verified = _verdict(data, root, fast=True)
    strict = _verdict(data, root, fast=False)
    if isinstance(verified, str) or isinstance(strict, str):
        assert verified == strict, (verified, strict)
    else:
        assert json.dumps(verified.payload) == json.dumps(strict.payload)
        assert verified._replace(payload=None) == strict._replace(payload=None)
    if isinstance(verified, str):
        assert verified in REASONS, verified
        assert verified != "unhandled_input", data[:200]  # no rule covered it: a gap
        return None
    payload = verified.payload
    if verified.outcome != Outcome.NOT_ERASED:
        decision = decide(_Plan(payload["sanitization"]),
                          [_Check(c) for c in payload["verification"]["checks"]])
        assert decision.outcome is not Outcome.NOT_ERASED
        if verified.outcome == Outcome.ERASED:
            assert decision.outcome is Outcome.ERASED
    assert verified.station_id == payload["custody"]["station_id"]
    assert verified.station_id.isascii()
    return verified


def seed_parts(index: int) -> tuple[dict[str, Any], dict[str, Any], Any, str]:
    name, root, key_seed, kind = SEEDS[index]
    outer = json.loads((CORPUS / name).read_bytes())
    header = json.loads(jws.b64url_decode(outer["protected"], "header"))
    payload = json.loads(jws.b64url_decode(outer["payload"], "payload"))
    return header, payload, make_corpus.seeded_key(key_seed, kind), root


def resign(header: Any, payload_bytes: bytes, key: Any) -> bytes:
    p64 = b64url(json.dumps(header, separators=(",", ":")).encode())
    b64 = b64url(payload_bytes)
    signature = raw_sign(key, jws.signing_input(p64, b64))
    return json.dumps(
        {"payload": b64, "protected": p64, "signature": b64url(signature)},
        separators=(",", ":"),
    ).encode()


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z\Z")
    | st.sampled_from(["erased", "erased_with_exceptions", "not_erased", "pass", "fail",
                       "warn", "info", "skipped", "error", "confirmed", "failed",
                       "not_established", "validation", "verification", "purge", "clear",
                       "bench-01", "b\u0435nch-01", "bench-02", "", "null"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def apply(document: Any, path: tuple[Any, ...], action: str, new: Any) -> None:
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[f"{last}_extra"] = new
    else:
        parent[last] = new


@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_raw_byte_mutations(index: int, data: st.DataObject) -> None:
    name, root, _, _ = SEEDS[index]
    blob = bytearray((CORPUS / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            blob[position] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del blob[position]
        elif action == "insert":
            blob[position:position] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del blob[position:]
        if not blob:
            break
    judge(bytes(blob), root)


@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_payload_value_mutations_resigned(index: int, data: st.DataObject) -> None:
    header, payload, key, root = seed_parts(index)
    for _ in range(data.draw(st.integers(1, 3))):
        where = paths(payload)
        if not where:
            break
        path = data.draw(st.sampled_from(where))
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        apply(payload, path, action, data.draw(json_values))
    canonical = data.draw(st.booleans())
    body = (jws.canonical_json(payload) if canonical
            else json.dumps(payload, ensure_ascii=data.draw(st.booleans())).encode())
    judge(resign(header, body, key), root)


@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_header_mutations_resigned(index: int, data: st.DataObject) -> None:
    header, payload, key, root = seed_parts(index)
    action = data.draw(st.sampled_from(["replace", "delete", "add", "x5c", "reorder"]))
    member = data.draw(st.sampled_from(sorted(header)))
    if action == "replace":
        header[member] = data.draw(json_values | st.sampled_from(
            ["EdDSA", "ES256", "ES384", "none", "HS256", "wipeagent-cert+jws"]))
    elif action == "delete":
        del header[member]
    elif action == "add":
        header[data.draw(st.sampled_from(["crit", "jwk", "jku", "x5u", "b64", "zip", "x"]))] = (
            data.draw(json_values))
    elif action == "x5c":
        chain = header["x5c"]
        op = data.draw(st.sampled_from(["drop", "duplicate", "swap", "garbage"]))
        if op == "drop" and len(chain) > 1:
            chain.pop(data.draw(st.integers(0, len(chain) - 1)))
        elif op == "duplicate":
            chain.append(chain[0])
        elif op == "swap":
            chain.reverse()
        else:
            chain[data.draw(st.integers(0, len(chain) - 1))] = data.draw(st.text(max_size=40))
    else:
        header = dict(reversed(list(header.items())))
    judge(resign(header, jws.canonical_json(payload), key), root)


@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_x5c_der_mutations_resigned(index: int, data: st.DataObject) -> None:
    header, payload, key, root = seed_parts(index)
    which = data.draw(st.integers(0, len(header["x5c"]) - 1))
    der = bytearray(base64.b64decode(header["x5c"][which]))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(der) - 1))
        op = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        if op == "flip":
            der[position] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del der[position:]
        else:
            der[position:position] = data.draw(st.binary(min_size=1, max_size=3))
        if not der:
            break
    header["x5c"][which] = base64.b64encode(bytes(der)).decode()
    judge(resign(header, jws.canonical_json(payload), key), root)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_seeds_verify_unmutated(index: int) -> None:
    """The property tests start from certificates that really verify (else they prove
    nothing), and re-signing an unchanged payload keeps them valid."""
    header, payload, key, root = seed_parts(index)
    name = SEEDS[index][0]
    assert judge((CORPUS / name).read_bytes(), root) is not None
    assert judge(resign(header, jws.canonical_json(payload), key), root) is not None
