"""Version-2 sections of the hand-off work: `handoff`, `intake`, `device.meid` and
`device.imei_source` in the payload, their consistency rules, and the PDF's words."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import certs_fixtures as fx
import pytest

from wipeagent.certs import ensure_dev_pki, issue_certificate, verify_certificate
from wipeagent.certs.payload import build_payload, validate_payload
from wipeagent.certs.pdf import render_pdf
from wipeagent.certs.pki import dev_trust_root
from wipeagent.errors import CertificateError
from wipeagent.models import IdentifierSource, Outcome, SessionRecord


def payload(record: SessionRecord | None = None) -> dict[str, Any]:
    return build_payload(record or fx.erased_record(),
                         certificate_id="01a1f838-4640-7d0f-8631-ca1ddba8db3b",
                         issued_at=fx.T0.replace(minute=10), sequence=1, previous_hash=None,
                         development=False, verification_url=None)


def test_sections_as_issued() -> None:
    p = payload()
    assert p["handoff"]["policy"] == "restore" and p["handoff"]["status"] == "completed"
    assert [i["id"] for i in p["handoff"]["items"]] == [
        "stay_awake", "test_harness_mode", "bench_key", "usb_debugging"]
    assert p["intake"] == {"reference": "TI-1042 <b>&amp;", "matched_by": "imei",
                           "identifier": "356789012345678", "source": "platform"}
    assert p["device"]["imei_source"] == "phone" and p["device"]["meid"] is None
    validate_payload(p, thorough=True)
    not_erased = payload(fx.not_erased_record())
    assert not_erased["handoff"] is None and not_erased["intake"] is None


@pytest.mark.parametrize("change, rule", [
    (lambda p: p["handoff"].update(status="failed"), "exactly when one of its items failed"),
    (lambda p: p["handoff"]["items"][-1].update(result="failed"), "exactly when one"),
    (lambda p: (p["handoff"]["items"][-1].update(result="failed"),
                p["handoff"].update(status="failed")), "not erased"),
    (lambda p: p["handoff"].update(ended_at="2026-11-20T09:07:00Z"), "ended before it started"),
    (lambda p: p["device"].update(imei_source=None), "imei_source"),
    (lambda p: p["device"].update(imeis=[]), "imei_source"),
])
def test_handoff_rules(change, rule) -> None:  # type: ignore[no-untyped-def]
    p = copy.deepcopy(payload())
    change(p)
    with pytest.raises(CertificateError, match=rule) as refused:
        validate_payload(p)
    assert refused.value.reason == "inconsistent_payload"


def test_failed_handoff_with_exceptions_is_valid_and_handoff_only_after_an_erase() -> None:
    record = fx.erased_record(outcome=Outcome.ERASED_WITH_EXCEPTIONS,
                              handoff=fx.restore_handoff(failed=True),
                              exceptions=("hand-off failed: USB debugging",))
    validate_payload(payload(record), thorough=True)
    p = payload(fx.not_erased_record())
    p["handoff"] = payload()["handoff"]
    with pytest.raises(CertificateError, match="verified erase only"):
        validate_payload(p)


def test_schema_refuses_what_the_agent_never_writes() -> None:
    for change in (lambda p: p["device"].update(meid="a10000009296f2"),  # lower case
                   lambda p: p["device"].update(imei_source="guessed"),
                   lambda p: p["handoff"]["items"][0].update(result="probably"),
                   lambda p: p["intake"].update(reference="TI-王"),  # ASCII only
                   lambda p: p["intake"].update(matched_by="slot")):
        p = copy.deepcopy(payload())
        change(p)
        with pytest.raises(CertificateError) as refused:
            validate_payload(p)
        assert refused.value.reason == "schema_invalid"


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils")
@pytest.mark.parametrize("language, words", [
    ("en", ["Hand-off: the state the phone leaves in", "USB debugging turned off.",
            "This bench's key is still known to the phone until its next reset",
            "read from the phone", "TI-1042", "matched by IMEI"]),
    ("zh", ["交付：手机离开时的状态", "已关闭 USB 调试", "从手机读取", "按 IMEI 匹配"]),
])
def test_pdf_says_it_in_words(tmp_path: Path, language: str, words: list[str]) -> None:
    signer = ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(fx.erased_record(), signer, sequence=1, previous_hash=None,
                               development=True, verification_url=None)
    verified = verify_certificate(issued.data, trust_roots=[dev_trust_root(tmp_path / "pki")])
    pdf = tmp_path / f"c.{language}.pdf"
    pdf.write_bytes(render_pdf(verified, language=language))
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                                   check=True, text=True).stdout.split())
    for word in words:
        assert word in text, word
    if language == "en":
        assert "<b>&amp;" in text  # the booking reference is printed as text, not markup


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils")
def test_pdf_of_a_failed_handoff_and_of_a_technician_imei(tmp_path: Path) -> None:
    ident = fx.android_identity().model_copy(update={"imei_source": IdentifierSource.TECHNICIAN})
    record = fx.erased_record(identity=ident, outcome=Outcome.ERASED_WITH_EXCEPTIONS,
                              handoff=fx.restore_handoff(failed=True),
                              exceptions=("hand-off failed: USB debugging",))
    signer = ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(record, signer, sequence=1, previous_hash=None,
                               development=True, verification_url=None)
    verified = verify_certificate(issued.data, trust_roots=[dev_trust_root(tmp_path / "pki")])
    pdf = tmp_path / "failed.pdf"
    pdf.write_bytes(render_pdf(verified))
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                                   check=True, text=True).stdout.split())
    assert "entered by the technician" in text
    assert "NOT DONE" in text and "FAILED: see the exceptions above" in text
    assert "ERASED WITH EXCEPTIONS" in text


def test_identity_journaled_before_imei_source_reads_as_from_the_phone() -> None:
    legacy = fx.android_identity().model_copy(update={"imei_source": None})
    p = payload(fx.erased_record(identity=legacy))
    assert p["device"]["imei_source"] == "phone"
    validate_payload(p)
