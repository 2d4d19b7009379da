"""The payload: schema (two validators agree), consistency rules, locks, ids and times."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import certs_fixtures as fx
import jsonschema
import jsonschema_rs
import pytest
from make_corpus import as_version

from wipeagent.certs.payload import (
    VERSION,
    build_payload,
    rfc3339,
    schema,
    uuid7,
    uuid7_time,
    validate_payload,
)
from wipeagent.errors import CertificateError
from wipeagent.models import CheckKind, CheckStatus

ISSUED = fx.T0 + timedelta(minutes=10)


def make(record: Any = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        certificate_id=uuid7(ISSUED),
        issued_at=ISSUED,
        sequence=1,
        previous_hash=None,
        development=False,
        verification_url=None,
    )
    args.update(kw)
    return build_payload(record or fx.erased_record(), **args)


def both(payload: Any) -> tuple[bool, bool]:
    reference = jsonschema.validators.validator_for(schema())(schema()).is_valid(payload)
    fast = jsonschema_rs.validator_for(schema()).is_valid(payload)
    return reference, fast


def test_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


MUTATIONS = {
    "drop certificate_id": lambda p: p.pop("certificate_id"),
    "drop device.serial": lambda p: p["device"].pop("serial"),
    "empty serial": lambda p: p["device"].__setitem__("serial", ""),
    "bad outcome": lambda p: p["outcome"].__setitem__("result", "wiped"),
    "uuid4 id": lambda p: p.__setitem__("certificate_id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    "local time": lambda p: p.__setitem__("issued_at", "2026-11-20T10:00:00+01:00"),
    "bool sequence": lambda p: p["chain"].__setitem__("sequence", True),
    "zero sequence": lambda p: p["chain"].__setitem__("sequence", 0),
    "short hash": lambda p: p["chain"].__setitem__("previous_hash", "abc"),
    "bad imei": lambda p: p["device"].__setitem__("imeis", ["12345"]),
    "extra member": lambda p: p.__setitem__("comment", "x"),
    "huge detail": lambda p: p["verification"]["checks"][0].__setitem__("detail", "x" * 1001),
    "nested evidence": lambda p: p["verification"]["checks"][0]["evidence"].__setitem__("a", {}),
    "version 3": lambda p: p.__setitem__("version", 3),
    "version true": lambda p: p.__setitem__("version", True),
    "cyrillic station id": lambda p: p["custody"].__setitem__("station_id", "b\u0435nch-01"),
    "station id with space": lambda p: p["chain"].__setitem__("station_id", "bench 01"),
    "destination": lambda p: p.__setitem__("destination", "landfill"),
    "javascript url": lambda p: p.__setitem__("verification_url", "javascript:alert(1)"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_both_validators_reject(name: str) -> None:
    payload = make()
    assert both(payload) == (True, True)
    MUTATIONS[name](payload)
    assert both(payload) == (False, False)
    with pytest.raises(CertificateError) as caught:
        validate_payload(payload)
    assert caught.value.reason == "schema_invalid"


def test_valid_payloads_pass_both() -> None:
    for payload in (
        make(),
        make(fx.not_erased_record()),
        make(sequence=9, previous_hash="a" * 64, verification_url="https://v.example/x"),
    ):
        assert both(payload) == (True, True)
        validate_payload(payload, thorough=True)
        json.dumps(payload, allow_nan=False)


def test_agent_issues_v2_and_v1_payloads_still_validate() -> None:
    payload = make()
    assert payload["version"] == VERSION == 2
    old = as_version(copy.deepcopy(payload), 1)  # what a version-1 agent wrote
    assert "handoff" not in old and "meid" not in old["device"]
    # Version 1 allowed any station id string; version 2 only ASCII letters, digits, . _ -.
    old["custody"]["station_id"] = old["chain"]["station_id"] = "bench 01"
    assert jsonschema_rs.validator_for(schema(1)).is_valid(old)
    assert validate_payload(old, thorough=True) is old
    assert not jsonschema_rs.validator_for(schema(2)).is_valid({**old, "version": 2})


def test_consistency_rules() -> None:
    payload = make()
    bad = copy.deepcopy(payload)
    bad["chain"]["previous_hash"] = "b" * 64  # sequence 1 must start the ledger
    with pytest.raises(CertificateError, match="previous_hash"):
        validate_payload(bad)
    bad = copy.deepcopy(payload)
    bad["sanitization"]["ended_at"] = "2026-11-20T09:01:00Z"
    with pytest.raises(CertificateError, match="ended before"):
        validate_payload(bad)
    bad = copy.deepcopy(payload)
    bad["outcome"]["result"] = "not_erased"
    with pytest.raises(CertificateError, match="reasons"):
        validate_payload(bad)
    bad = copy.deepcopy(payload)
    bad["sanitization"]["category"] = None
    with pytest.raises(CertificateError, match="NIST category"):
        validate_payload(bad)


def test_locks_record_only_what_was_checked() -> None:
    record = fx.not_erased_record()
    locks = make(record)["locks"]
    assert locks["activation_lock"]["state"] == "present"
    assert locks["activation_lock"]["checks"][0]["id"] == "lock.find_my"
    assert locks["google_frp"]["state"] == "not_applicable"  # iPhone
    assert locks["mdm"]["state"] == "not_checked"
    warn = fx.erased_record(
        verification=(
            fx.check("erase.reset_observed", CheckKind.VERIFICATION),
            fx.check("lock.frp_state", CheckKind.VERIFICATION, CheckStatus.WARN),
        )
    )
    assert make(warn)["locks"]["google_frp"]["state"] == "inconclusive"


def test_evidence_is_bounded_and_json_safe() -> None:
    record = fx.erased_record(
        verification=(
            fx.check("erase.reset_observed", CheckKind.VERIFICATION, log="y" * 5000),
            fx.check("erase.canary_files_gone", CheckKind.VALIDATION),
        )
    )
    payload = make(record)
    value = payload["verification"]["checks"][0]["evidence"]["log"]
    assert len(value) == 2000 and value.endswith("[truncated]")
    validate_payload(payload)


def test_uuid7_and_times() -> None:
    cid = uuid7(ISSUED)
    assert cid[14] == "7" and cid[19] in "89ab"
    assert uuid7_time(cid) == ISSUED.timestamp()
    assert uuid7(ISSUED) != cid
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    east = timezone(timedelta(hours=8))
    assert (
        rfc3339(datetime(2026, 1, 2, 11, 4, 5, 250000, tzinfo=east))
        == "2026-01-02T03:04:05.250000Z"
    )
    with pytest.raises(CertificateError):
        rfc3339(datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("statuses", "finding"),
    [
        ((CheckStatus.PASS,), "confirmed"),
        ((CheckStatus.PASS, CheckStatus.INFO), "confirmed"),
        ((CheckStatus.PASS, CheckStatus.SKIPPED, CheckStatus.INFO), "not_established"),
        ((CheckStatus.PASS, CheckStatus.WARN), "confirmed"),
        ((CheckStatus.PASS, CheckStatus.ERROR), "not_established"),
        ((CheckStatus.SKIPPED,), "not_established"),
        ((), "not_established"),
        ((CheckStatus.PASS, CheckStatus.FAIL), "failed"),
    ],
)
def test_technique_completed_finding(statuses: tuple[CheckStatus, ...], finding: str) -> None:
    checks = tuple(
        fx.check(f"erase.step{i}", CheckKind.VERIFICATION, s) for i, s in enumerate(statuses)
    )
    record = fx.erased_record(verification=checks)
    assert make(record)["verification"]["technique_completed"] == finding
