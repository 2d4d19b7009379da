"""The certificate payload: built from a finished SessionRecord, checked against the schema.

The payload is plain JSON (schema: wipeagent/certs/schema/certificate-v<version>.json;
every field documented in docs/certificate.md). The agent issues VERSION; a verifier accepts
every version in SCHEMA_VERSIONS, each checked against its own schema. It is checked twice
with the same code: when issuing (so the agent never signs something a verifier would
reject) and when verifying.
Besides the schema, `check_consistency` enforces the rules a schema cannot express, most
importantly that no certificate says "erased" without a completed, passing verification.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs

from wipeagent.errors import CertificateError
from wipeagent.models import (
    CheckKind,
    CheckResult,
    CheckStatus,
    Outcome,
    Platform,
    SessionRecord,
)

FORMAT = "wipeagent-certificate"
# The version the agent issues, and every version a verifier accepts (one schema file each).
VERSION = 2
SCHEMA_VERSIONS = (1, 2)
STANDARDS = ("NIST SP 800-88 Rev. 2", "IEEE 2883-2022")
MEDIA_TYPE = "flash memory (embedded in a mobile phone)"
EVIDENCE_MAX_CHARS = 2000
TRUNCATED = " [truncated]"

# Lock families are recognised from the check ids the platform drivers use; a check id
# containing any of these words is recorded under that lock (documented in certificate.md).
LOCK_WORDS: dict[str, tuple[str, ...]] = {
    "activation_lock": ("activation", "find_my", "findmy", "fmip"),
    "google_frp": ("frp", "factory_reset_protection", "google_account"),
    "mdm": ("mdm", "device_owner", "profile_owner", "supervis", "managed"),
}
LOCK_PLATFORM = {"activation_lock": Platform.IOS, "google_frp": Platform.ANDROID}


def uuid7(at: datetime) -> str:
    """A UUIDv7 (RFC 9562 section 5.7) whose timestamp is `at` (ms), the rest random."""
    ms = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def uuid7_time(value: str) -> float:
    """The Unix time (seconds) a UUIDv7 carries."""
    return (uuid.UUID(value).int >> 80) / 1000.0


def rfc3339(moment: datetime) -> str:
    """UTC time as RFC 3339 with a Z; a naive datetime is a caller bug and refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CertificateError(
            "inconsistent_record", f"naive datetime {moment!r} in the session record",
            hint="record every time as an aware UTC datetime (Clock.now())",
        )
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    # Drop an all-zero fraction so whole seconds read naturally.
    return text.replace(".000000+00:00", "Z").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse a payload time (schema-checked RFC 3339 'Z' form)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _evidence_value(value: str | int | float | bool | None) -> str | int | float | bool | None:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / Infinity
    if isinstance(value, str) and len(value) > EVIDENCE_MAX_CHARS:
        return value[: EVIDENCE_MAX_CHARS - len(TRUNCATED)] + TRUNCATED
    return value


def _check(check: CheckResult) -> dict[str, Any]:
    return {
        "id": check.id,
        "title": check.title,
        "kind": check.kind.value,
        "status": check.status.value,
        "method": check.method,
        "detail": check.detail,
        "evidence": {k: _evidence_value(v) for k, v in check.evidence.items()},
    }


# A check that could not run, or was skipped, leaves the finding in doubt. A warning does
# not: the check ran and passed its test, with something worth naming (an exception).
_DOUBT = frozenset({CheckStatus.ERROR, CheckStatus.SKIPPED})


def _finding(checks: tuple[CheckResult, ...], kind: CheckKind) -> str:
    """failed: any check of `kind` failed; confirmed: at least one passed and none is in
    doubt (error / skipped); anything else (none run, only info) is not_established.
    The same rule as wipeagent.outcome.decide, which is the only place outcomes are made.
    """
    relevant = [c for c in checks if c.kind is kind]
    if any(c.status is CheckStatus.FAIL for c in relevant):
        return "failed"
    if any(c.status is CheckStatus.PASS for c in relevant) and not any(
        c.status in _DOUBT for c in relevant
    ):
        return "confirmed"
    return "not_established"


def _locks(record: SessionRecord) -> dict[str, Any]:
    every = record.diagnostics + record.preconditions + record.verification
    platform = record.identity.platform if record.identity else None
    locks: dict[str, Any] = {}
    for name, words in LOCK_WORDS.items():
        found = [c for c in every if any(w in c.id for w in words)]
        only_on = LOCK_PLATFORM.get(name)
        if not found and platform is not None and only_on is not None and platform != only_on:
            state = "not_applicable"
        elif not found:
            state = "not_checked"
        elif any(c.status is CheckStatus.FAIL for c in found):
            state = "present"
        elif all(c.status is CheckStatus.PASS for c in found):
            state = "not_present"
        else:
            state = "inconclusive"
        locks[name] = {
            "state": state,
            "checks": [
                {"id": c.id, "status": c.status.value, "method": c.method} for c in found[:16]
            ],
        }
    return locks


def build_payload(
    record: SessionRecord,
    *,
    certificate_id: str,
    issued_at: datetime,
    sequence: int,
    previous_hash: str | None,
    development: bool,
    verification_url: str | None,
) -> dict[str, Any]:
    """The payload dict for `record` (not yet validated: call `validate_payload`)."""
    ident = record.identity
    device: dict[str, Any] | None = None
    if ident is not None:
        device = {
            "platform": ident.platform.value,
            "manufacturer": ident.manufacturer,
            "model": ident.model,
            "model_number": ident.model_number,
            "marketing_name": ident.marketing_name,
            "serial": ident.serial,
            "imeis": list(ident.imeis),
            "udid": ident.udid,
            "os_name": ident.os_name,
            "os_version": ident.os_version,
            "security_patch": ident.security_patch,
            "build_fingerprint": ident.build_fingerprint,
            "storage_capacity_bytes": ident.storage_capacity_bytes,
            "encryption": ident.encryption.value,
            "media_type": MEDIA_TYPE,
        }
    erase = record.erase
    sanitization: dict[str, Any] = {
        "performed": erase is not None,
        "category": record.category.value if record.category else None,
        "technique": erase.plan.technique if erase else None,
        "method_id": erase.plan.method_id if erase else None,
        "method": erase.plan.method if erase else None,
        "manual": erase.plan.manual if erase else False,
        "instructions": list(erase.plan.instructions) if erase else [],
        "started_at": rfc3339(erase.started_at) if erase else None,
        "ended_at": rfc3339(erase.ended_at) if erase and erase.ended_at else None,
        "tool": {"name": record.station.tool_name, "version": record.station.tool_version},
        "standards": list(STANDARDS),
    }
    summary = {status.value: 0 for status in CheckStatus}
    for check in record.diagnostics:
        summary[check.status.value] += 1
    return {
        "format": FORMAT,
        "version": VERSION,
        "certificate_id": certificate_id,
        "issued_at": rfc3339(issued_at),
        "development": development,
        "verification_url": verification_url,
        "outcome": {
            "result": record.outcome.value,
            "reasons": list(record.reasons),
            "exceptions": list(record.exceptions),
        },
        "device": device,
        "sanitization": sanitization,
        "verification": {
            "technique_completed": _finding(record.verification, CheckKind.VERIFICATION),
            "data_unrecoverable": _finding(record.verification, CheckKind.VALIDATION),
            "checks": [_check(c) for c in record.verification],
        },
        "preconditions": {"checks": [_check(c) for c in record.preconditions]},
        "diagnostics": {"summary": summary, "checks": [_check(c) for c in record.diagnostics]},
        "locks": _locks(record),
        "custody": {
            "operator": record.operator,
            "station_id": record.station.station_id,
            "site": record.station.site,
            "organisation": record.station.organisation,
            "slot": record.slot,
            "session_id": record.session_id,
            "session_started_at": rfc3339(record.started_at),
            "session_ended_at": rfc3339(record.ended_at),
        },
        "destination": record.destination,
        "chain": {
            "station_id": record.station.station_id,
            "sequence": sequence,
            "previous_hash": previous_hash,
        },
    }


@cache
def schema(version: int = VERSION) -> dict[str, Any]:
    """The payload JSON Schema of `version`, shipped in the package."""
    if version not in SCHEMA_VERSIONS:
        raise ValueError(f"no schema for certificate version {version!r}")
    text = resources.files("wipeagent.certs").joinpath(
        f"schema/certificate-v{version}.json"
    ).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(version: int) -> Any:
    cls = jsonschema.validators.validator_for(schema(version))
    cls.check_schema(schema(version))
    return cls(schema(version))


def payload_version(payload: Any) -> int:
    """The payload's schema version; CertificateError("schema_invalid") if unsupported."""
    version = payload.get("version") if isinstance(payload, dict) else None
    # bool is an int in Python: `true` must not pass for version 1.
    if type(version) is not int or version not in SCHEMA_VERSIONS:
        raise CertificateError(
            "schema_invalid",
            f"payload version {str(version)[:20]!r} is not one of {list(SCHEMA_VERSIONS)}",
        )
    return version


def check_consistency(payload: dict[str, Any]) -> None:
    """Rules beyond the schema; CertificateError("inconsistent_payload") when broken.

    Above all: "erased" only with a performed, finished sanitization with a category and
    a verification that established the technique completed and found nothing failing.
    """
    result = payload["outcome"]["result"]
    san = payload["sanitization"]
    ver = payload["verification"]
    problems: list[str] = []
    if result in (Outcome.ERASED, Outcome.ERASED_WITH_EXCEPTIONS):
        if payload["device"] is None:
            problems.append("an erased phone must be identified")
        if not san["performed"] or san["ended_at"] is None or san["category"] is None:
            problems.append("erased needs a finished sanitization with a NIST category")
        if ver["technique_completed"] != "confirmed":
            problems.append("erased needs a verification confirming the technique completed")
        if ver["data_unrecoverable"] != "confirmed":
            problems.append("erased needs a validation confirming the data is gone")
        if any(c["status"] == "fail" for c in ver["checks"]):
            problems.append("erased with a failed verification check")
    if result == Outcome.ERASED and any(c["status"] in ("error", "warn") for c in ver["checks"]):
        problems.append("a post-erase check could not run or warned: not a clean erase")
    if result == Outcome.ERASED_WITH_EXCEPTIONS and not payload["outcome"]["exceptions"]:
        problems.append("erased_with_exceptions must list its exceptions")
    if result == Outcome.NOT_ERASED and not payload["outcome"]["reasons"]:
        problems.append("not_erased must give its reasons")
    if (
        san["started_at"]
        and san["ended_at"]
        and parse_time(san["ended_at"]) < parse_time(san["started_at"])
    ):
        problems.append("sanitization ended before it started")
    chain = payload["chain"]
    if chain["station_id"] != payload["custody"]["station_id"]:
        problems.append("chain.station_id differs from custody.station_id")
    if (chain["sequence"] == 1) != (chain["previous_hash"] is None):
        problems.append("previous_hash must be null exactly for sequence 1")
    if problems:
        raise CertificateError("inconsistent_payload", "; ".join(problems))


@cache
def _fast_validator(version: int) -> Any:
    return jsonschema_rs.validator_for(schema(version))


def validate_payload(payload: Any, *, thorough: bool = False) -> dict[str, Any]:
    """Schema of the payload's version, then consistency; returns the payload.

    CertificateError("schema_invalid") for a schema violation or an unsupported version.
    Two maintained JSON Schema implementations: jsonschema-rs (compiled, ~20 µs a
    payload) decides on every verification; the pure-Python reference `jsonschema`
    explains a rejection and, with thorough=True (when issuing), must agree as well.
    """
    version = payload_version(payload)
    fast_ok = bool(_fast_validator(version).is_valid(payload))
    if not fast_ok or thorough:
        error = jsonschema.exceptions.best_match(_validator(version).iter_errors(payload))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            message = f"payload invalid at {where}: {error.message}"
            raise CertificateError("schema_invalid", message[:500])
        if not fast_ok:
            raise CertificateError("schema_invalid", "payload rejected by jsonschema-rs")
    assert isinstance(payload, dict)
    check_consistency(payload)
    return payload


def now_utc() -> datetime:
    """The wall-clock time, UTC (certificates carry real time, see Clock.now)."""
    return datetime.fromtimestamp(time.time(), UTC)
