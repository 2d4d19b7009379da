"""The certificate payload: built from a finished SessionRecord, checked against the schema.

The payload is plain JSON (schema: wipeagent/certs/schema/certificate-v<version>.json;
every field documented in docs/certificate.md). The agent issues VERSION; a verifier accepts
every version in SCHEMA_VERSIONS, each checked against its own schema. It is checked twice
with the same code: when issuing (so the agent never signs something a verifier would
reject) and when verifying.
Besides the schema, `check_consistency` enforces the rules a schema cannot express, most
importantly that no certificate says "erased" unless `wipeagent.outcome.decide` (the rule
the bench itself uses) says so for the checks the payload carries.

Nothing here needs pydantic: a verify-only install runs this module (records from
`wipeagent.models` are only read, when issuing).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

import jsonschema_rs

from wipeagent.certs import jws
from wipeagent.enums import CheckKind, CheckStatus, NistCategory, Outcome, Platform
from wipeagent.errors import CertificateError
from wipeagent.outcome import decide

if TYPE_CHECKING:
    from wipeagent.certs.schema_decoder import SchemaDecoder
    from wipeagent.models import CheckResult, SessionRecord

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
# One search per lock family (the same words; faster than testing each word in turn),
# and the platform the lock exists on, as a plain string.
_LOCK_RULES = tuple(
    (name, re.compile("|".join(map(re.escape, words))),
     str(LOCK_PLATFORM[name]) if name in LOCK_PLATFORM else None)
    for name, words in LOCK_WORDS.items())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CertificateError(
            "inconsistent_record", f"naive datetime {moment!r} in the session record",
            hint="record every time as an aware UTC datetime (Clock.now())",
        )


def unix_ms(at: datetime) -> int:
    """Milliseconds since 1970 of an aware datetime, in exact integer arithmetic."""
    _require_aware(at)
    delta = at - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


# A reason / exception code as schema v2 admits it (outcome.reason_codes).
_CODE = re.compile(r"^[a-z0-9_]{1,64}(:[a-z0-9_.]{1,64})?$")


def uuid7(at: datetime) -> str:
    """A UUIDv7 (RFC 9562 section 5.7) whose timestamp is `at` (ms), the rest random."""
    ms = unix_ms(at) & ((1 << 48) - 1)
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
    _require_aware(moment)
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    # Drop an all-zero fraction so whole seconds read naturally.
    return text.replace(".000000+00:00", "Z").replace("+00:00", "Z")


# RFC 3339 section 5.6 date-time, restricted to UTC with "Z" and at most 6 fraction digits
# (what the agent writes). ASCII digits only.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


def _real_time(text: str) -> datetime:
    """A schema-checked time (its shape is the schema's `time` pattern) as a datetime;
    CertificateError("invalid_time") when it names no real moment."""
    try:
        # Python 3.11 reads the "Z" itself (the same datetime as "+00:00", and no slower).
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise CertificateError("invalid_time", f"{text!r} is not a real time: {exc}") from exc


def parse_time(text: Any) -> datetime:
    """A payload time: RFC 3339 UTC ('Z') with a real calendar date and clock time.

    CertificateError("invalid_time") for anything else: impossible dates (2026-02-30,
    month 13), hour 24, and leap seconds (second 60: RFC 3339 allows it, but no agent
    writes one and Python's datetime cannot hold it, so it is refused, never rounded).
    """
    if not isinstance(text, str) or _TIME.fullmatch(text) is None:
        raise CertificateError("invalid_time", f"{str(text)[:40]!r} is not an RFC 3339 UTC time")
    return _real_time(text)


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
_DOUBT = frozenset({CheckStatus.ERROR.value, CheckStatus.SKIPPED.value})
# Plain strings for the rules below, which run on every verification: reading an enum
# member's .value goes through a Python-level property, a dict of str does not.
_FAIL, _PASS = CheckStatus.FAIL.value, CheckStatus.PASS.value
_ONLY_PASS = frozenset({_PASS})
_EMPTY_SUMMARY = {status.value: 0 for status in CheckStatus}


def finding(checks: Sequence[dict[str, Any]], kind: CheckKind) -> str:
    """The summary over the payload checks of `kind`: failed if any failed; confirmed if
    at least one passed and none is in doubt (error / skipped); else not_established
    (none run, only info). The same rule as wipeagent.outcome.decide.
    """
    wanted = str(kind)
    statuses = {c["status"] for c in checks if c["kind"] == wanted}
    if _FAIL in statuses:
        return "failed"
    if _PASS in statuses and not statuses & _DOUBT:
        return "confirmed"
    return "not_established"


# check id -> the lock families it belongs to. Ids repeat from certificate to certificate
# (they name the driver's checks), so a batch searches each id once; bounded.
_FAMILIES: dict[str, tuple[str, ...]] = {}


def _families(check_id: str) -> tuple[str, ...]:
    found = _FAMILIES.get(check_id)
    if found is None:
        found = tuple(name for name, pattern, _ in _LOCK_RULES if pattern.search(check_id))
        if len(_FAMILIES) >= 4096:
            _FAMILIES.clear()
        _FAMILIES[check_id] = found
    return found


def derive_locks(checks: Sequence[dict[str, Any]], platform: str | None) -> dict[str, Any]:
    """The `locks` section from every check of the payload (diagnostics, preconditions,
    verification, in that order): what was checked, never more (rules in certificate.md)."""
    by_family: dict[str, list[dict[str, Any]]] = {name: [] for name in LOCK_WORDS}
    known = _FAMILIES.get
    for check in checks:
        families = known(check["id"])  # (inline: a call per check shows in verify's time)
        if families is None:
            families = _families(check["id"])
        for family in families:
            by_family[family].append(check)
    locks: dict[str, Any] = {}
    for name, _, only_on in _LOCK_RULES:
        found = by_family[name]
        statuses = {c["status"] for c in found}
        if not found and platform is not None and only_on is not None and platform != only_on:
            state = "not_applicable"
        elif not found:
            state = "not_checked"
        elif _FAIL in statuses:
            state = "present"
        elif statuses == _ONLY_PASS:
            state = "not_present"
        else:
            state = "inconclusive"
        locks[name] = {
            "state": state,
            "checks": [
                {"id": c["id"], "status": c["status"], "method": c["method"]} for c in found[:16]
            ],
        }
    return locks


def _summary(checks: Sequence[dict[str, Any]]) -> dict[str, int]:
    summary = dict(_EMPTY_SUMMARY)
    for check in checks:
        summary[check["status"]] += 1
    return summary


def _handoff(record: SessionRecord) -> dict[str, Any] | None:
    """The hand-off after a verified erase (docs/certificate.md#hand-off), or None."""
    handoff = record.handoff
    if handoff is None:
        return None
    return {
        "policy": handoff.policy.value,
        "status": handoff.status.value,
        "started_at": rfc3339(handoff.started_at),
        "ended_at": rfc3339(handoff.ended_at),
        "attested_by": handoff.attested_by,
        "items": [{"id": i.id, "title": i.title, "result": i.result.value,
                   "before": i.before, "after": i.after, "method": i.method,
                   "detail": i.detail} for i in handoff.items[:32]],
    }


def _intake(record: SessionRecord) -> dict[str, Any] | None:
    """The intake booking the phone matched (its reference links the platform's order)."""
    booking = record.booking
    if booking is None:
        return None
    return {"reference": booking.reference, "matched_by": booking.matched_by,
            "identifier": booking.identifier, "source": booking.source}


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
            "meid": ident.meid,
            # Identities journaled before imei_source existed only ever held IMEIs read
            # from the phone.
            "imei_source": (ident.imei_source.value if ident.imei_source
                            else "phone" if ident.imeis else None),
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
    verification = [_check(c) for c in record.verification]
    preconditions = [_check(c) for c in record.preconditions]
    diagnostics = [_check(c) for c in record.diagnostics]
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
            "reason_codes": [c for c in record.reason_codes if _CODE.fullmatch(c)],
            "exception_codes": [c for c in record.exception_codes if _CODE.fullmatch(c)],
        },
        "device": device,
        "sanitization": sanitization,
        "verification": {
            "technique_completed": finding(verification, CheckKind.VERIFICATION),
            "data_unrecoverable": finding(verification, CheckKind.VALIDATION),
            "checks": verification,
        },
        "preconditions": {"checks": preconditions},
        "diagnostics": {"summary": _summary(diagnostics), "checks": diagnostics},
        "locks": derive_locks(diagnostics + preconditions + verification,
                              ident.platform.value if ident else None),
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
        "handoff": _handoff(record),
        "intake": _intake(record),
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


class _Check(NamedTuple):
    """A payload check as wipeagent.outcome.decide reads it (outcome.CheckLike); a
    NamedTuple because one is made per check of every certificate verified."""

    id: str
    kind: CheckKind
    status: CheckStatus
    title: str
    detail: str


class _Plan(NamedTuple):
    """A payload's sanitization as wipeagent.outcome.decide reads it (outcome.PlanLike)."""

    manual: bool
    category: NistCategory


# Schema-checked strings to their enum members (a dict lookup; Enum(value) is slower).
_KINDS = {k.value: k for k in CheckKind}
_STATUSES = {s.value: s for s in CheckStatus}
_CATEGORIES = {c.value: c for c in NistCategory}
_ERASED, _NOT_ERASED = Outcome.ERASED.value, Outcome.NOT_ERASED.value
_ERASED_WITH_EXCEPTIONS = Outcome.ERASED_WITH_EXCEPTIONS.value
_VERIFICATION, _VALIDATION = CheckKind.VERIFICATION, CheckKind.VALIDATION


def _outcome_problems(payload: dict[str, Any]) -> list[str]:
    """The outcome rule applied to the checks themselves, not only to the summaries."""
    result = payload["outcome"]["result"]
    san = payload["sanitization"]
    ver = payload["verification"]
    checks = ver["checks"]
    problems: list[str] = []
    for field, kind in (("technique_completed", _VERIFICATION),
                        ("data_unrecoverable", _VALIDATION)):
        if ver[field] != finding(checks, kind):
            problems.append(f"verification.{field} does not follow from the checks")
    if result == _NOT_ERASED:
        if not payload["outcome"]["reasons"]:
            problems.append("not_erased must give its reasons")
        return problems  # saying less than the checks would allow is never a false claim
    if payload["device"] is None:
        problems.append("an erased phone must be identified")
    if not san["performed"] or san["ended_at"] is None or san["category"] is None:
        problems.append("erased needs a finished sanitization with a NIST category")
        return problems
    statuses = {c["status"] for c in checks}
    if _FAIL in statuses:
        problems.append("erased with a failed verification check")
    if result == _ERASED and not statuses.isdisjoint(("error", "warn")):
        problems.append("a post-erase check could not run or warned: not a clean erase")
    decision = decide(
        _Plan(manual=san["manual"], category=_CATEGORIES[san["category"]]),
        [_Check(c["id"], _KINDS[c["kind"]], _STATUSES[c["status"]], c["title"],
                c["detail"])
         for c in checks],
    )
    if decision.outcome == _NOT_ERASED:
        problems.append(f"the outcome rule finds the phone not erased "
                        f"({', '.join(decision.codes)}): " + "; ".join(decision.reasons)[:300])
    elif result == _ERASED and decision.outcome != _ERASED:
        problems.append("the outcome rule finds exceptions, so not a plain erased")
    elif result == _ERASED_WITH_EXCEPTIONS:
        listed = set(payload["outcome"]["exceptions"])
        if not listed:
            problems.append("erased_with_exceptions must list its exceptions")
        elif not listed.issuperset(decision.exceptions):
            problems.append("an exception the outcome rule finds is not listed")
    return problems


def check_consistency(payload: dict[str, Any]) -> datetime:
    """Rules beyond the schema (docs/certificate.md, "Consistency rules"); returns the
    issue time.

    CertificateError("invalid_time") for a time that is not a real RFC 3339 UTC time,
    else CertificateError("inconsistent_payload") naming every broken rule. Above all:
    "erased" only when wipeagent.outcome.decide, applied to the payload's own checks and
    sanitization, says erased (and erased_with_exceptions lists what it finds).
    """
    san = payload["sanitization"]
    custody = payload["custody"]
    # The schema fixed every time's shape (`time` pattern); only the calendar is left.
    issued_at = _real_time(payload["issued_at"])
    session_start = _real_time(custody["session_started_at"])
    session_end = _real_time(custody["session_ended_at"])
    started = _real_time(san["started_at"]) if san["started_at"] is not None else None
    ended = _real_time(san["ended_at"]) if san["ended_at"] is not None else None
    problems = _outcome_problems(payload)
    if started is not None and ended is not None and ended < started:
        problems.append("sanitization ended before it started")
    if session_end < session_start:
        problems.append("the session ended before it started")
    # Within a millisecond: agents before 0.2 computed the id's time in floating point.
    cid = payload["certificate_id"]  # schema: 8-4-... lowercase hex, the first 48 bits
    if abs(int(cid[:8] + cid[9:13], 16) - unix_ms(issued_at)) > 1:
        problems.append("certificate_id does not carry issued_at (UUIDv7 time)")
    diagnostics = payload["diagnostics"]
    if diagnostics["summary"] != _summary(diagnostics["checks"]):
        problems.append("diagnostics.summary does not count diagnostics.checks")
    device = payload["device"]
    every = diagnostics["checks"] + payload["preconditions"]["checks"] + (
        payload["verification"]["checks"])
    if payload["locks"] != derive_locks(every, device["platform"] if device else None):
        problems.append("locks do not follow from the checks")
    _check_handoff(payload, problems)
    chain = payload["chain"]
    if chain["station_id"] != custody["station_id"]:
        problems.append("chain.station_id differs from custody.station_id")
    if (chain["sequence"] == 1) != (chain["previous_hash"] is None):
        problems.append("previous_hash must be null exactly for sequence 1")
    if problems:
        raise CertificateError("inconsistent_payload", "; ".join(problems)[:1000])
    return issued_at


def _check_handoff(payload: dict[str, Any], problems: list[str]) -> None:
    """The hand-off rules (version 2): a hand-off follows a verified erase only; a failed
    one is an exception (erased_with_exceptions), never a silent `erased`; its status
    agrees with its items. IMEIs have a source and a source has IMEIs."""
    device = payload.get("device")
    if (isinstance(device, dict) and "imei_source" in device
            and (device["imei_source"] is None) != (not device["imeis"])):
        problems.append("device.imei_source is given exactly when there are IMEIs")
    handoff = payload.get("handoff")
    if handoff is None:
        return
    result = payload["outcome"]["result"]
    if result == _NOT_ERASED:
        problems.append("a hand-off follows a verified erase only (not for not_erased)")
    failed = any(item["result"] == "failed" for item in handoff["items"])
    if failed != (handoff["status"] == "failed"):
        problems.append("handoff.status is failed exactly when one of its items failed")
    if handoff["status"] == "failed" and result == _ERASED:
        problems.append("a failed hand-off is an exception: erased_with_exceptions, not "
                        "erased")
    # (Both are schema-checked `time`s: only the calendar is left to check.)
    if _real_time(handoff["ended_at"]) < _real_time(handoff["started_at"]):
        problems.append("the hand-off ended before it started")


@cache
def _fast_validator(version: int) -> Any:
    return jsonschema_rs.validator_for(schema(version))


def _reference_errors(payload: Any, version: int) -> str | None:
    """The pure-Python reference `jsonschema`'s verdict (installed with the bench: the
    agent double-checks what it signs; a verify-only install does without it)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema(version))
    error = jsonschema.exceptions.best_match(cls(schema(version)).iter_errors(payload))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"payload invalid at {where}: {error.message}"


def validate_payload(payload: Any, *, thorough: bool = False) -> dict[str, Any]:
    """Schema of the payload's version, then consistency; returns the payload.

    CertificateError("schema_invalid") for a schema violation or an unsupported version.
    jsonschema-rs (compiled, a few µs a payload) decides and explains a rejection; with
    thorough=True (when issuing) the pure-Python reference `jsonschema` must agree too.
    """
    check_payload(payload, thorough=thorough)
    assert isinstance(payload, dict)
    return payload


def check_payload(payload: Any, *, thorough: bool = False) -> datetime:
    """validate_payload, returning the (validated) issue time instead."""
    version = payload_version(payload)
    validator = _fast_validator(version)
    if not validator.is_valid(payload):
        error = next(iter(validator.iter_errors(payload)), None)
        where = "/".join(str(p) for p in getattr(error, "instance_path", ())) or "(root)"
        message = getattr(error, "message", "rejected by jsonschema-rs")
        raise CertificateError("schema_invalid", f"payload invalid at {where}: {message}"[:500])
    if thorough:
        reference = _reference_errors(payload, version)
        if reference is not None:
            raise CertificateError("schema_invalid", reference[:500])
    assert isinstance(payload, dict)
    return check_consistency(payload)


@cache
def _schema_decoder(version: int) -> SchemaDecoder:
    # Imported and compiled on first use: msgspec and the schema's types cost ~30 ms that
    # only a verification should pay (not `wipeagent --version`).
    from wipeagent.certs.schema_decoder import SchemaDecoder

    return SchemaDecoder(schema(version), f"PayloadV{version}")


# A canonical payload (sorted keys) ends with its version: "version" sorts last.
_VERSION_TAILS = tuple((f',"version":{v}}}'.encode(), v) for v in SCHEMA_VERSIONS)
# Setting the fast path up costs 10-25 ms (importing msgspec, compiling a schema into
# types) and it saves ~15 µs a payload, so a process takes the strict path for its first
# FAST_PATH_AFTER payloads (a `wipeagent verify` of a few certificates never pays the
# set-up) and the fast path from then on (a batch, the platform service): by then the
# strict path has spent about what the set-up costs, which keeps any batch within twice
# its best choice in hindsight (the ski-rental rule). Tests set it to 0 or beyond reach.
FAST_PATH_AFTER = 1000
_loads = itertools.count()  # payloads this process has loaded (next() is atomic)


def load_payload(data: bytes) -> tuple[dict[str, Any], datetime]:
    """The signed payload bytes parsed and checked: (payload, issue time).

    Exactly jws.parse_payload then check_payload, faster for what agents sign: a payload
    spelled canonically is parsed and checked against its version's schema in one pass
    by the schema compiled into msgspec types (schema_decoder.py: it returns a value only
    when jsonschema-rs would accept it and any JSON parser would read that same value);
    anything else (other spellings, every rejection) takes the full path, which decides
    and explains. The consistency rules run on both paths. (See FAST_PATH_AFTER.)
    """
    if next(_loads) >= FAST_PATH_AFTER:
        for tail, version in _VERSION_TAILS:
            if data.endswith(tail):
                payload = _schema_decoder(version).decode(data)
                if payload is not None:
                    return payload, check_consistency(payload)
                break
    payload = jws.parse_payload(data)
    return payload, check_payload(payload)


def now_utc() -> datetime:
    """The wall-clock time, UTC (certificates carry real time, see Clock.now)."""
    return datetime.fromtimestamp(time.time(), UTC)
