"""The Chinese PDF shows every value in Chinese (check names, statuses, kinds, technique,
encryption, reasons and exceptions from their machine codes); the signed payload keeps the
machine codes and the English texts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import certs_fixtures as fx
import pytest

from wipeagent.certs import dev_trust_root, ensure_dev_pki, issue_certificate, verify_certificate
from wipeagent.certs.pdf import render_pdf
from wipeagent.models import CheckKind, CheckResult, CheckStatus, Outcome

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils")


def _check(id: str, title: str, kind: CheckKind, status: CheckStatus,
           detail: str = "") -> CheckResult:
    return CheckResult(id=id, title=title, kind=kind, status=status, method="adb shell ls",
                       detail=detail)


def _text(pdf: bytes, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    return "".join(subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                                  capture_output=True, text=True, timeout=60).stdout.split())


def _verified(tmp_path: Path, record: object) -> object:
    signer = ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(record, signer, sequence=1, previous_hash=None,  # type: ignore[arg-type]
                               development=True, verification_url=None)
    return verify_certificate(issued.data, trust_roots=[dev_trust_root(tmp_path / "pki")])


def test_values_are_translated_and_codes_are_signed(tmp_path: Path) -> None:
    checks = (
        _check("android.verify.reset", "Factory reset took place", CheckKind.VERIFICATION,
               CheckStatus.PASS),
        _check("android.verify.canary_files", "Canary files gone", CheckKind.VALIDATION,
               CheckStatus.PASS),
        _check("android.verify.encryption", "Encryption", CheckKind.VERIFICATION,
               CheckStatus.WARN, "not confirmed"),
    )
    record = fx.erased_record(outcome=Outcome.ERASED_WITH_EXCEPTIONS, verification=checks,
                              exceptions=("Encryption: not confirmed",))
    record = record.model_copy(update={"exception_codes": (
        "check_warning:android.verify.encryption",)})
    verified = _verified(tmp_path, record)
    outcome = verified.payload["outcome"]  # type: ignore[attr-defined]
    assert outcome["exception_codes"] == ["check_warning:android.verify.encryption"]
    assert outcome["exceptions"] == ["Encryption: not confirmed"]  # signed text: English

    zh = _text(render_pdf(verified, language="zh"), tmp_path, "zh")  # type: ignore[arg-type]
    for chinese in ("已执行恢复出厂设置", "标记文件已消失", "通过", "警告", "验证", "确认",
                    "通过恢复出厂设置进行加密擦除", "文件级加密", "检查项有警告：加密。",
                    "闪存（内置于手机）"):
        assert chinese in zh, chinese
    for english in ("Factoryresettookplace", "Canaryfilesgone", "cryptographicerase",
                    "file_based", "verification", "validation", "notconfirmed",
                    "flashmemory"):
        assert english not in zh, english

    en = _text(render_pdf(verified, language="en"), tmp_path, "en")  # type: ignore[arg-type]
    assert "Factoryresettookplace" in en and "Encryption:notconfirmed" in en


def test_not_erased_reasons_from_codes(tmp_path: Path) -> None:
    record = fx.not_erased_record().model_copy(update={"reason_codes": ("find_my",)})
    verified = _verified(tmp_path, record)
    zh = _text(render_pdf(verified, language="zh"), tmp_path, "zh")  # type: ignore[arg-type]
    assert "“查找”（激活锁）已开启。" in zh and "FindMyison" not in zh
    # A payload without codes (version 1, or an unknown code) shows the signed text.
    unknown = fx.not_erased_record().model_copy(update={"reason_codes": ("from_the_future",)})
    zh = _text(render_pdf(_verified(tmp_path / "u", unknown), language="zh"),  # type: ignore[arg-type]
               tmp_path, "zh2")
    assert "FindMyison:ActivationLockwouldsurvivetheerase" in zh
