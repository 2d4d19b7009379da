"""The payload fast path (wipeagent/certs/schema_decoder.py) never accepts what the strict
path refuses, and never reads a value the strict path would read differently.

Differential: for the corpus's payloads, for hypothesis mutations of the seed payloads
(values anywhere, duplicated members, raw bytes, other spellings), `SchemaDecoder.decode`
either returns None or returns exactly what the strict path returns (jws.parse_payload
with its duplicate-key rule, then jsonschema-rs and the reference `jsonschema` both
accepting it under the schema). Plus: the compiler refuses every schema keyword or regex
form it does not implement, so a schema change cannot silently loosen the fast path.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from certs_fixtures import payload_path
from hypothesis import given
from hypothesis import strategies as st
from test_certs_fuzz import FUZZ, SEEDS, apply, json_values, paths, seed_parts

from wipeagent.certs import jws
from wipeagent.certs import payload as payload_module
from wipeagent.certs.payload import (
    SCHEMA_VERSIONS,
    VERSION,
    check_payload,
    load_payload,
    schema,
)
from wipeagent.certs.schema_decoder import (
    SchemaDecoder,
    UnsupportedSchema,
    compile_schema,
    python_pattern,
)
from wipeagent.errors import CertificateError

CORPUS = Path(__file__).parent / "corpus"
DECODERS = {v: SchemaDecoder(schema(v)) for v in SCHEMA_VERSIONS}
DECODER = DECODERS[VERSION]
RUST = {v: jsonschema_rs.validator_for(schema(v)) for v in SCHEMA_VERSIONS}
REFERENCE = {v: jsonschema.validators.validator_for(schema(v))(schema(v))
             for v in SCHEMA_VERSIONS}
REFUSED = object()


def strict(data: bytes, version: int = VERSION) -> Any:
    """What the strict path makes of payload bytes under `version`'s schema: the value,
    or REFUSED."""
    try:
        value = jws.parse_payload(data)
    except CertificateError:
        return REFUSED
    if not isinstance(value, dict) or value.get("version") != version:
        return REFUSED
    if not RUST[version].is_valid(value) or not REFERENCE[version].is_valid(value):
        return REFUSED
    return value


def typed(value: Any) -> str:
    # repr-level comparison: 1, 1.0 and true are == in Python but different JSON.
    return json.dumps(value, sort_keys=True)


def agree(data: bytes) -> Any:
    """The property, for the decoder of every schema version; returns the value of the
    decoder that accepted (None: every one deferred)."""
    accepted = None
    for version, decoder in DECODERS.items():
        fast = decoder.decode(data)
        if fast is not None:
            slow = strict(data, version)
            assert slow is not REFUSED, data[:200]
            assert typed(fast) == typed(slow)
            accepted = fast
    return accepted


def seed_payloads() -> list[dict[str, Any]]:
    return [seed_parts(i)[1] for i in range(len(SEEDS))]


def dumps_with_duplicate(value: Any, target: Any, key: str, second: Any) -> str:
    """Canonical JSON of `value` in which the object `target` holds `key` twice (the
    second time with `second`), right after the first (sorted order kept)."""
    if isinstance(value, dict):
        parts = []
        for name, child in sorted(value.items()):
            parts.append(json.dumps(name, ensure_ascii=False) + ":"
                         + dumps_with_duplicate(child, target, key, second))
            if value is target and name == key:
                parts.append(json.dumps(name, ensure_ascii=False) + ":"
                             + dumps_with_duplicate(second, target, key, second))
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps_with_duplicate(v, target, key, second) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --- the corpus -----------------------------------------------------------------------

def test_every_schema_version_compiles() -> None:
    for version in SCHEMA_VERSIONS:
        SchemaDecoder(schema(version))


def test_corpus_payloads_agree_and_the_fast_path_is_used() -> None:
    hits = dict.fromkeys(SCHEMA_VERSIONS, 0)
    for path in sorted(CORPUS.glob("*.jws")):
        try:
            payload_bytes = jws.parse(path.read_bytes()).payload_bytes
        except CertificateError:
            continue
        agree(payload_bytes)
        for version, decoder in DECODERS.items():
            hits[version] += decoder.decode(payload_bytes) is not None
    # The valid certificates and the consistency-rule cases of both versions.
    assert hits[VERSION] >= 10 and all(hits.values()), hits


@pytest.mark.parametrize("fast", [True, False])
def test_load_payload_is_the_strict_path_on_both_paths(fast: bool) -> None:
    for payload in seed_payloads():
        data = jws.canonical_json(payload)
        with payload_path(fast):
            loaded, issued = load_payload(data)
        assert typed(loaded) == typed(payload)
        assert issued == check_payload(jws.parse_payload(data))
        # Another spelling of the same payload: the full path, the same answer.
        spaced = json.dumps(payload, sort_keys=True, indent=1).encode()
        assert DECODER.decode(spaced) is None
        with payload_path(fast):
            again, issued_again = load_payload(spaced)
        assert typed(again) == typed(payload) and issued_again == issued


def test_the_fast_path_is_set_up_only_once_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    data = jws.canonical_json(seed_payloads()[0])
    calls: list[bytes] = []

    class Spy:
        def decode(self, data: bytes) -> Any:
            calls.append(data)
            return DECODER.decode(data)

    monkeypatch.setattr(payload_module, "_schema_decoder", lambda version: Spy())
    monkeypatch.setattr(payload_module, "FAST_PATH_AFTER", 3)
    monkeypatch.setattr(payload_module, "_loads", itertools.count())
    results = [load_payload(data) for _ in range(5)]
    assert len(calls) == 2  # the first three took the strict path
    assert len({typed(p) for p, _ in results}) == 1


@pytest.mark.parametrize("fast", [True, False])
def test_load_payload_refuses_what_the_strict_path_refuses(fast: bool) -> None:
    payload = seed_payloads()[0]
    payload["custody"]["slot"] = 7
    with payload_path(fast), pytest.raises(CertificateError) as caught:
        load_payload(jws.canonical_json(payload))
    assert caught.value.reason == "schema_invalid"
    duplicate = dumps_with_duplicate(payload, payload, "version", 2).encode()
    with payload_path(fast), pytest.raises(CertificateError) as caught:
        load_payload(duplicate)
    assert caught.value.reason == "malformed"


# --- targeted spellings and values ----------------------------------------------------

def _variants(payload: dict[str, Any]) -> dict[str, bytes]:
    canonical = jws.canonical_json(payload).decode()
    chain = payload["chain"]
    return {
        "duplicate version": dumps_with_duplicate(payload, payload, "version", 2).encode(),
        "duplicate sequence, other value": dumps_with_duplicate(
            payload, chain, "sequence", chain["sequence"] + 1).encode(),
        "unknown member": jws.canonical_json({**payload, "zzz": 1}),
        "float integer": canonical.replace(
            f'"sequence":{chain["sequence"]}', f'"sequence":{chain["sequence"]}.0').encode(),
        "exponent integer": canonical.replace(
            f'"sequence":{chain["sequence"]}', f'"sequence":{chain["sequence"]}e0').encode(),
        "escaped letter": canonical.replace('"format"', '"\\u0066ormat"').encode(),
        "escaped value": canonical.replace('"wipeagent-certificate"',
                                           '"wipeagent\\u002dcertificate"').encode(),
        "whitespace": canonical.replace(',"version"', ', "version"').encode(),
        "time with newline": canonical.replace(
            f'"issued_at":"{payload["issued_at"]}"',
            f'"issued_at":"{payload["issued_at"]}\\n"').encode(),
        "bool version": canonical.replace('"version":2', '"version":true').encode(),
        "big integer": canonical.replace(
            f'"sequence":{chain["sequence"]}', '"sequence":' + "9" * 30).encode(),
        "lone surrogate": canonical.replace('"resale"', '"\\ud800"').encode(),
        "trailing data": (canonical + " ").encode(),
        "version 1": canonical.replace('"version":2', '"version":1').encode(),  # v2 only
    }


@pytest.mark.parametrize("index", [i for i, p in enumerate(seed_payloads())
                                   if p["version"] == VERSION])
def test_targeted_variants_take_the_full_path(index: int) -> None:
    payload = seed_parts(index)[1]
    assert agree(jws.canonical_json(payload)) is not None
    for name, data in _variants(payload).items():
        assert DECODER.decode(data) is None, name
        agree(data)


def test_string_lengths_count_code_points_like_the_schema() -> None:
    payload = next(p for p in seed_payloads() if p.get("version") == VERSION)
    limit = schema(VERSION)["$defs"]["short"]["maxLength"]
    for text, fits in (("王" * limit, True), ("王" * (limit + 1), False),
                       ("\U0001f600" * limit, True), ("x" * (limit + 1), False)):
        payload["custody"]["site"] = text
        value = agree(jws.canonical_json(payload))
        assert (value is not None) is fits
        assert (strict(jws.canonical_json(payload)) is not REFUSED) is fits


# --- hypothesis -----------------------------------------------------------------------

@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_value_mutations_agree(index: int, data: st.DataObject) -> None:
    payload = seed_parts(index)[1]
    for _ in range(data.draw(st.integers(1, 3))):
        where = paths(payload)
        if not where:
            break
        path = data.draw(st.sampled_from(where))
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        apply(payload, path, action, data.draw(json_values))
    agree(jws.canonical_json(payload))
    agree(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_duplicate_members_never_pass(index: int, data: st.DataObject) -> None:
    payload = seed_parts(index)[1]
    objects = [payload] + [_at(payload, p) for p in paths(payload)
                           if isinstance(_at(payload, p), dict)]
    target = data.draw(st.sampled_from([o for o in objects if o]))
    key = data.draw(st.sampled_from(sorted(target)))
    second = target[key] if data.draw(st.booleans()) else data.draw(json_values)
    assert agree(dumps_with_duplicate(payload, target, key, second).encode()) is None


@FUZZ
@given(index=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_byte_mutations_agree(index: int, data: st.DataObject) -> None:
    blob = bytearray(jws.canonical_json(seed_parts(index)[1]))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            blob[position] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del blob[position]
        else:
            blob[position:position] = data.draw(
                st.binary(min_size=1, max_size=3)
                | st.sampled_from([b",", b'"', b"\\", b"0", b".0", b"\n", b"{", b"}"]))
    agree(bytes(blob))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


# --- the compiler refuses what it does not implement ----------------------------------

@pytest.mark.parametrize("node", [
    {"type": "string", "format": "date-time"},
    {"type": "string", "pattern": "[a-z]+"},  # not anchored
    {"type": "string", "pattern": "^\\d+$"},  # \d means more in Python than in ECMA-262
    {"type": "string", "pattern": "^[^a]$"},  # negated class
    {"type": "string", "pattern": "^a.b$"},  # an unescaped dot
    {"type": "string", "pattern": "^(?=a)a$"},  # look-ahead
    {"type": "string", "pattern": "^a*?$"},  # lazy quantifier
    {"type": "string", "pattern": "^(?i)a$"},  # inline flag
    {"type": "string", "pattern": "^\\w$"},
    {"type": "integer", "exclusiveMinimum": 0},
    {"type": "integer", "minimum": 0.5},
    {"type": "number", "maximum": 3},
    {"type": ["string", "null"]},
    {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]},
    {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    {"anyOf": [{"type": "string"}]},
    {"type": "object", "properties": {"a": {"type": "string"}}},  # members left open
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"],
     "additionalProperties": False},
    {"type": "object", "additionalProperties": True},
    {"type": "array"},
    {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    {"const": 1.5},
    {"enum": [True]},
    {"$ref": "#/$defs/missing"},
    {"$ref": "https://example.com/schema"},
])
def test_unsupported_schema_is_refused(node: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_schema(node)


def test_patterns_match_whole_strings_only() -> None:
    import re

    time_pattern = re.compile(python_pattern(schema(VERSION)["$defs"]["time"]["pattern"]))
    assert time_pattern.search("2026-01-02T03:04:05.123Z")
    for bad in ("2026-01-02T03:04:05Z\n", "x2026-01-02T03:04:05Z", "2026-01-02T03:04:05Zx",
                "٢٠٢٦-01-02T03:04:05Z"):
        assert time_pattern.search(bad) is None, bad
