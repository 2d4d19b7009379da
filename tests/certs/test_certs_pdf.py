"""PDF rendering: both languages, every character legible, phone text escaped, QR readable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import certs_fixtures as fx
import pytest
from cryptography import x509
from PIL import Image

from wipeagent.certs import (
    KeySigner,
    dev_trust_root,
    ensure_dev_pki,
    issue_certificate,
    load_station_signer,
    pki,
    verify_certificate,
)
from wipeagent.certs.pdf import qr_content, render_pdf
from wipeagent.models import CheckKind, CheckResult, CheckStatus, SessionRecord

pytestmark = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs poppler-utils")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where rendered PDFs/PNGs go: $WIPEAGENT_ARTIFACTS/certs if set (to look at them)."""
    base = os.environ.get("WIPEAGENT_ARTIFACTS")
    path = Path(base) / "certs" if base else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeySigner, x509.Certificate]:
    d = tmp_path_factory.mktemp("devpki-pdf")
    return ensure_dev_pki(d, station_id="bench-01"), dev_trust_root(d)


def _hostile_record() -> SessionRecord:
    record = fx.erased_record(identity=fx.ios_identity())
    hostile = CheckResult(
        id="erase.canary_files_gone",
        title="Canary <b>gone</b> & «检查» </para>",
        kind=CheckKind.VALIDATION,
        status=CheckStatus.PASS,
        method="ls /private/var/mobile/Media/<canary>&&echo",
        evidence={"files": 3},
    )
    return record.model_copy(update={"verification": (*record.verification[:1], hostile)})


def _text(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


@pytest.mark.parametrize("language", ["en", "zh"])
def test_render_both_languages(
    language: str, dev: tuple[KeySigner, x509.Certificate], artifacts: Path
) -> None:
    signer, root = dev
    issued = issue_certificate(
        _hostile_record(),
        signer,
        sequence=1,
        previous_hash=None,
        development=True,
        verification_url="https://verify.example/c",
    )
    verified = verify_certificate(issued.data, trust_roots=[root])
    pdf = artifacts / f"certificate-{language}.pdf"
    pdf.write_bytes(render_pdf(verified, language=language))
    text = _text(pdf)
    squashed = "".join(text.split())
    # phone-provided markup shows up literally, not interpreted
    assert "Canary<b>gone</b>&«检查»</para>" in squashed
    assert "ls/private/var/mobile/Media/<canary>&&echo" in squashed
    assert "tech<script>alert(1)</script>王" in squashed
    assert "iPhone13«测试»<i>&amp;" in squashed
    assert verified.certificate_id in squashed
    assert "F2LXK0AAAAAA" in squashed
    if language == "zh":
        assert "数据清除（介质净化）证书" in squashed and "开发测试证书" in squashed
        assert "已清除" in squashed
    else:
        assert "CertificateofMediaSanitization" in squashed
        assert "DEVELOPMENTCERTIFICATE" in squashed and "ERASED" in squashed
    fonts = subprocess.run(
        ["pdffonts", str(pdf)], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()[2:]
    # Every font that draws text is the embedded CJK font; reportlab always lists its
    # default Helvetica as a resource, unused because initialFontName is ours.
    assert any("WenQuanYi" in line and " yes yes yes " in line for line in fonts)
    assert all(" yes " in line or line.startswith("Helvetica ") for line in fonts)
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "80",
            "-f",
            "1",
            "-l",
            "1",
            str(pdf),
            str(artifacts / f"certificate-{language}"),
        ],
        check=True,
        timeout=60,
    )
    png = next(artifacts.glob(f"certificate-{language}*.png"))
    with Image.open(png) as image:
        gray = image.convert("L")
        assert gray.width > 500 and gray.height > 700
        # the red development banner sits at the top of the page
        rgb = image.convert("RGB")
        top = [
            rgb.getpixel((x, y)) for x in range(60, gray.width - 60, 20) for y in range(40, 90, 5)
        ]
        assert any(r > 150 and g < 90 and b < 90 for r, g, b in top)
        dark = sum(gray.histogram()[:128])
        assert dark > 0.02 * gray.width * gray.height  # text and QR, not a blank page


def test_no_banner_for_production(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca", organisation="Acme")
    req = pki.new_station(tmp_path, station_id="bench-01")
    chain = pki.sign_station(
        req.csr, ca_key_path=ca.key, ca_cert_path=ca.cert, out_path=tmp_path / "station.pem"
    )
    signer = load_station_signer(req.key, chain)
    issued = issue_certificate(
        fx.not_erased_record(),
        signer,
        sequence=1,
        previous_hash=None,
        development=False,
        verification_url=None,
    )
    verified = verify_certificate(issued.data, trust_roots=pki.load_trust_roots(ca.cert))
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(render_pdf(verified, language="en"))
    text = "".join(_text(pdf).split())
    assert "DEVELOPMENT" not in text and "NOTERASED" in text
    assert "FindmyisonorActivationLock".lower() not in text.lower()  # reasons are quoted as is
    assert "FindMyison" in text
    assert (
        qr_content(verified, None)
        == f"wipeagent-cert:{verified.certificate_id}:sha256:{verified.sha256}"
    )


def test_render_refuses_unverified_payload() -> None:
    with pytest.raises(TypeError):
        render_pdf({"payload": {}}, language="en")  # type: ignore[arg-type]


def test_qr_is_a_link_to_the_verification_page_and_the_footer_says_so(
        tmp_path: Path) -> None:
    signer = pki.ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(fx.not_erased_record(), signer, sequence=1,
                               previous_hash=None, development=True,
                               verification_url="https://platform.example/verify")
    verified = verify_certificate(issued.data,
                                  trust_roots=[pki.dev_trust_root(tmp_path / "pki")])
    link = (f"https://platform.example/verify?id={verified.certificate_id}"
            f"&sha256={verified.sha256}")
    assert qr_content(verified, "https://platform.example/verify") == link
    assert qr_content(verified, "https://p.example/v?lang=zh").startswith(
        "https://p.example/v?lang=zh&id=")
    for language, words in (("en", "scantheQRcode"), ("zh", "扫描二维码")):
        pdf = tmp_path / f"c.{language}.pdf"
        pdf.write_bytes(render_pdf(verified, language=language))
        text = "".join(_text(pdf).split())
        assert words in text and "wipeagentverify" not in text
        assert verified.sha256 in text  # the printed link, for typing it in


@pytest.mark.parametrize("language", ["en", "zh"])
def test_printed_qr_code_scans_to_the_link(language: str, tmp_path: Path) -> None:
    """The QR code, as printed (rasterised at 150 dpi), decodes to exactly the link."""
    signer = pki.ensure_dev_pki(tmp_path / "pki", station_id="bench-01")
    issued = issue_certificate(fx.erased_record(), signer, sequence=1, previous_hash=None,
                               development=True, verification_url="https://p.example/verify")
    verified = verify_certificate(issued.data,
                                  trust_roots=[pki.dev_trust_root(tmp_path / "pki")])
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(render_pdf(verified, language=language))
    subprocess.run(["pdftoppm", "-png", "-r", "150", "-singlefile", str(pdf),
                    str(tmp_path / "page")], check=True, timeout=60)
    scanned = subprocess.run(["zbarimg", "--raw", "-q", str(tmp_path / "page.png")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert scanned.returncode == 0, scanned.stderr
    assert scanned.stdout.strip() == qr_content(verified, "https://p.example/verify")
