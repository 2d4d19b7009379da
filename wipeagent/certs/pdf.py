"""The human-readable certificate: a PDF rendered only from a verified, signed payload.

`render_pdf` accepts a `VerifiedCertificate` (which only `verify_certificate` makes), so
what the PDF shows is exactly what the signature covers. English ("en") or Simplified
Chinese ("zh"); one embedded CJK TrueType font (WenQuanYi Micro Hei, Debian package
fonts-wqy-microhei) draws every character of both. Every string that came from a phone
(or anywhere else) is escaped before it reaches reportlab's paragraph markup.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import qrcode
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from wipeagent.certs.verify import VerifiedCertificate
from wipeagent.errors import ConfigError
from wipeagent.i18n import N_, gettext, messages, translator

DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_NAME = "WipeagentCJK"
LANGUAGES = ("en", "zh")

# Every label of the PDF, in English (the msgid); the Chinese is in the one message
# catalogue (wipeagent/i18n/locale/zh_CN), like every other technician-facing text.
_LABELS: dict[str, str] = {
    "title": N_("Certificate of Media Sanitization"),
    "dev": N_("DEVELOPMENT CERTIFICATE - NOT VALID AS PROOF OF ERASURE"),
    "outcome": N_("Outcome"),
    "erased": N_("ERASED"),
    "erased_with_exceptions": N_("ERASED WITH EXCEPTIONS"),
    "not_erased": N_("NOT ERASED"),
    "reasons": N_("Reasons"),
    "exceptions": N_("Exceptions"),
    "certificate": N_("Certificate"),
    "certificate_id": N_("Certificate ID"),
    "issued_at": N_("Issued (UTC)"),
    "sha256": N_("SHA-256 of signed file"),
    "ledger": N_("Station ledger"),
    "device": N_("Device"),
    "platform": N_("Platform"),
    "manufacturer": N_("Manufacturer"),
    "model": N_("Model"),
    "model_number": N_("Model number"),
    "serial": N_("Serial number"),
    "imeis": N_("IMEI"),
    "udid": N_("UDID"),
    "os": N_("Operating system"),
    "capacity": N_("Storage capacity"),
    "encryption": N_("Encryption"),
    "media_type": N_("Media type"),
    "no_device": N_("The device could not be identified."),
    "sanitization": N_("Sanitization"),
    "category": N_("NIST SP 800-88 category"),
    "technique": N_("Technique"),
    "method": N_("Method"),
    "manual": N_("Manual (guided) reset"),
    "period": N_("Started / ended (UTC)"),
    "tool": N_("Tool"),
    "standards": N_("Standards"),
    "not_performed": N_("not performed"),
    "verification": N_("Verification"),
    "technique_completed": N_("Technique completed"),
    "data_unrecoverable": N_("Data unrecoverable (checked means)"),
    "check": N_("Check"),
    "kind": N_("Kind"),
    "status": N_("Status"),
    "locks": N_("Locks (as checked)"),
    "activation_lock": N_("Activation Lock / Find My"),
    "google_frp": N_("Google FRP"),
    "mdm": N_("MDM / device management"),
    "diagnostics": N_("Diagnostics summary"),
    "custody": N_("Performed by"),
    "operator": N_("Operator"),
    "station": N_("Station"),
    "site": N_("Site"),
    "organisation": N_("Organisation"),
    "destination": N_("Post-sanitization destination"),
    "signed_by": N_("Signed by"),
    "verify_link": N_(
        "Check this certificate yourself: scan the QR code with your phone's "
        "camera, or open this link in a browser. The page verifies the "
        "signature on your device:"),
    "verify_hint": N_(
        "Verify: wipeagent verify FILE --trust ROOT.pem (the QR code holds "
        "the ID and hash)"),
    "confirmed": N_("confirmed"),
    "failed": N_("FAILED"),
    "not_established": N_("not established"),
    "not_applicable": N_("not applicable"),
    "not_checked": N_("not checked"),
    "not_present": N_("not present"),
    "present": N_("PRESENT"),
    "inconclusive": N_("inconclusive"),
    "yes": N_("yes"),
    "no": N_("no"),
    "clear": N_("Clear"),
    "purge": N_("Purge"),
    "reuse": N_("reuse"),
    "resale": N_("resale"),
    "recycling": N_("recycling"),
    "meid": N_("MEID"),
    "imei_phone": N_("read from the phone"),
    "imei_technician": N_("entered by the technician"),
    "booking": N_("Booking reference"),
    "matched_by_serial": N_("matched by serial number"),
    "matched_by_imei": N_("matched by IMEI"),
    "handoff": N_("Hand-off: the state the phone leaves in"),
    "handoff_none": N_(
        "No hand-off: the phone was not erased and stays with the bench."),
    "handoff_policy": N_("Hand-off"),
    "policy_restore": N_(
        "settings put back and USB debugging turned off by the bench (each "
        "value read back)"),
    "policy_final_reset": N_(
        "a second factory reset by the technician (attested by the "
        "technician, not verified by the bench)"),
    "handoff_completed": N_("completed"),
    "handoff_failed": N_("FAILED: see the exceptions above"),
    "attested_by": N_("Attested by"),
    "r_restored": N_("done"),
    "r_unchanged": N_("already so"),
    "r_not_restorable": N_("remains"),
    "r_failed": N_("NOT DONE"),
    "r_observed": N_("observed"),
    "r_attested": N_("attested"),
}

# What each hand-off item means for the next owner, in words a buyer understands:
# (item id, result) -> sentence. Items without one are shown as "title: detail".
_HANDOFF_TEXT: dict[tuple[str, str], str] = {
    ("usb_debugging", "restored"): N_("USB debugging turned off."),
    ("bench_key", "not_restorable"): N_(
        "This bench's key is still known to the phone until its next reset; "
        "it cannot be used while USB debugging is off."),
    ("package_verifier", "restored"): N_(
        "Apps installed over USB are checked again (package verifier on)."),
    ("automatic_updates", "restored"): N_("Automatic system updates turned back on."),
    ("stay_awake", "restored"): N_("The screen no longer stays on while charging."),
    ("adb_key_expiry", "restored"): N_("USB debugging authorisations expire again."),
    ("location", "restored"): N_("Location turned off; the owner turns it on."),
    ("developer_options", "restored"): N_("Developer options turned off."),
    ("lock_screen", "restored"): N_("Lock screen turned back on (swipe); the owner sets a PIN."),
    ("setup_wizard", "not_restorable"): N_(
        "The setup wizard was skipped: the phone starts at its home screen "
        "and the owner adds accounts in Settings."),
    ("test_harness_mode", "not_restorable"): N_(
        "Until its next factory reset the phone tells apps it is in Test "
        "Harness Mode."),
    ("auto_sync", "not_restorable"): N_(
        "Automatic account sync is off: the owner turns it on in Settings > "
        "Accounts."),
    ("final_reset", "attested"): N_(
        "Reset once more by the technician to its out-of-box state (setup "
        "wizard, no USB debugging, no bench key); attested by the technician, "
        "not verified by the bench."),
    ("setup_assistant", "observed"): N_(
        "At Setup Assistant: the owner sets the phone up from the start."),
    ("activation_state", "observed"): N_("Activation as the phone reports it."),
    ("activation_lock", "observed"): N_(
        "Find My / Activation Lock as the phone itself reports it; only "
        "activation proves Activation Lock is off."),
    ("bench_pairing", "restored"): N_(
        "This bench's pairing removed: the phone trusts no computer."),
}


def _t(key: str, lang: str) -> str:
    return gettext(lang, _LABELS[key])


def _register_font(font_path: Path) -> None:
    if FONT_NAME in pdfmetrics.getRegisteredFontNames():
        return
    if not font_path.is_file():
        raise ConfigError(
            f"CJK font {font_path} not found",
            hint="install the Debian package fonts-wqy-microhei",
        )
    # subfontIndex 0 of the collection is WenQuanYi Micro Hei (Latin + CJK).
    pdfmetrics.registerFont(TTFont(FONT_NAME, str(font_path), subfontIndex=0))


def qr_content(cert: VerifiedCertificate, verification_url: str | None) -> str:
    """What the QR code says: a URL with id and hash, or a plain id+hash token."""
    if verification_url:
        query = urlencode({"id": cert.certificate_id, "sha256": cert.sha256})
        return f"{verification_url}{'&' if '?' in verification_url else '?'}{query}"
    return f"wipeagent-cert:{quote(cert.certificate_id)}:sha256:{cert.sha256}"


def qr_runs(content: str) -> tuple[int, list[tuple[int, int, int]]]:
    """The QR code of `content` as (modules per side, dark runs (row, first column,
    length)): each row's horizontal runs of dark modules, quiet zone included in the size."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    code.add_data(content)
    code.make(fit=True)
    matrix: list[list[bool]] = code.get_matrix()
    runs: list[tuple[int, int, int]] = []
    for row, line in enumerate(matrix):
        col = 0
        while col < len(line):
            if line[col]:
                start = col
                while col < len(line) and line[col]:
                    col += 1
                runs.append((row, start, col - start))
            else:
                col += 1
    return len(matrix), runs


class QrCode(Flowable):  # type: ignore[misc]  # reportlab is untyped
    """A QR code drawn as one filled vector path (one `re` per run of dark modules): sharp
    at any zoom or printer resolution, and a few hundred path operators instead of one
    graphics object per module (which cost 40 ms a certificate)."""

    def __init__(self, content: str, size: float) -> None:
        super().__init__()
        self.modules, self.runs = qr_runs(content)
        self.size = size

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.size, self.size

    def draw(self) -> None:
        cell = self.size / self.modules
        path = self.canv.beginPath()
        for row, col, length in self.runs:
            path.rect(col * cell, self.size - (row + 1) * cell, length * cell, cell)
        self.canv.setFillColor(colors.black)
        self.canv.drawPath(path, stroke=0, fill=1)


class _Styles:
    def __init__(self, lang: str) -> None:
        wrap = "CJK" if lang == "zh" else None
        base = {"fontName": FONT_NAME, "wordWrap": wrap}
        self.title = ParagraphStyle("title", fontSize=17, leading=22, spaceAfter=4, **base)
        self.h = ParagraphStyle("h", fontSize=11, leading=14, spaceBefore=6, spaceAfter=2,
                                textColor=colors.HexColor("#1f3a5f"), **base)
        self.cell = ParagraphStyle("cell", fontSize=8, leading=10, **base)
        self.small = ParagraphStyle("small", fontSize=7, leading=9,
                                    textColor=colors.HexColor("#444444"), **base)
        self.banner = ParagraphStyle("banner", fontSize=12, leading=16, alignment=1,
                                     textColor=colors.white, **base)
        self.outcome = ParagraphStyle("outcome", fontSize=14, leading=18, **base)


def _p(text: Any, style: ParagraphStyle) -> Paragraph:
    # The one place text enters reportlab markup: escape &, <, > from whatever source.
    return Paragraph(escape("" if text is None else str(text)), style)


def _kv(rows: Sequence[tuple[str, Any]], st: _Styles) -> Table:
    table = Table([[_p(k, st.cell), _p(v, st.cell)] for k, v in rows],
                  colWidths=[48 * mm, 126 * mm])
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f7")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#b8c2cc")),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    return table


def _handoff_rows(handoff: dict[str, Any] | None, lang: str) -> list[tuple[str, Any]]:
    """The hand-off as rows: how, whether it completed, then one sentence per item."""
    if handoff is None:
        return [(_t("handoff_policy", lang), _t("handoff_none", lang))]
    rows: list[tuple[str, Any]] = [
        (_t("handoff_policy", lang), _t(f"policy_{handoff['policy']}", lang)),
        (_t("status", lang), _t(f"handoff_{handoff['status']}", lang)),
    ]
    if handoff["attested_by"]:
        rows.append((_t("attested_by", lang), handoff["attested_by"]))
    for item in handoff["items"]:
        known = _HANDOFF_TEXT.get((item["id"], item["result"]))
        sentence = gettext(lang, known) if known else None
        if sentence is None or item["result"] == "failed":
            sentence = f"{item['title']}: {item['detail'] or item['result']}"
        elif item["result"] == "observed" and item["after"]:
            sentence = f"{sentence} [{item['after']}]"
        rows.append((_t(f"r_{item['result']}", lang), sentence))
    return rows


def _word(value: str | None, lang: str) -> str:
    if value is None:
        return "-"
    return _t(value, lang) if value in _LABELS else value


def _table(table: dict[str, str], value: str | None, lang: str) -> str:
    """A machine value (status, kind, encryption ...) in words; unknown values as they are."""
    if value is None:
        return "-"
    return gettext(lang, table[value]) if value in table else value


def _outcome_rows(payload: dict[str, Any], lang: str) -> list[tuple[str, str]]:
    """Reasons and exceptions: from their machine codes in the reader's language (schema
    v2), else (version 1, or a code this version does not know) the signed English text."""
    _ = translator(lang)
    outcome = payload["outcome"]
    titles = {c["id"]: c["title"] for c in payload["verification"]["checks"]}
    rows: list[tuple[str, str]] = []
    for label, texts, codes in (("reasons", outcome["reasons"], outcome.get("reason_codes")),
                                ("exceptions", outcome["exceptions"],
                                 outcome.get("exception_codes"))):
        words = [messages.code_text(_, c, titles) for c in codes or ()]
        if lang != "en" and codes and all(w != c for w, c in zip(words, codes, strict=True)):
            rows += [(_t(label, lang), w) for w in words]
        else:
            rows += [(_t(label, lang), text) for text in texts]
    return rows


def render_pdf(
    cert: VerifiedCertificate,
    *,
    language: str = "en",
    verification_url: str | None = None,
    font_path: Path = DEFAULT_FONT,
) -> bytes:
    """The PDF of a verified certificate, in "en" or "zh".

    The QR code uses `verification_url` if given, else the URL signed into the payload.
    """
    if not isinstance(cert, VerifiedCertificate):
        raise TypeError("render_pdf takes a VerifiedCertificate (from verify_certificate)")
    if language not in LANGUAGES:
        raise ConfigError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    _register_font(font_path)
    lang, st, p = language, _Styles(language), cert.payload
    story: list[Any] = []
    if p["development"]:
        banner = Table([[_p(_t("dev", lang), st.banner)]], colWidths=[174 * mm])
        banner.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#c0392b")),
                                    ("TOPPADDING", (0, 0), (-1, -1), 5),
                                    ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
        story += [banner, Spacer(1, 3 * mm)]
    url = verification_url or p["verification_url"]
    head = Table(
        [[[_p(_t("title", lang), st.title),
           _p(f"{_t('outcome', lang)}: {_t(p['outcome']['result'], lang)}", st.outcome),
           _p(f"{_t('certificate_id', lang)}: {cert.certificate_id}", st.cell),
           _p(f"{_t('issued_at', lang)}: {p['issued_at']}", st.cell)],
          QrCode(qr_content(cert, url), 32 * mm)]],
        colWidths=[140 * mm, 34 * mm],
    )
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story.append(head)
    extra = _outcome_rows(p, lang)
    if extra:
        story.append(_kv(extra, st))

    story.append(_p(_t("device", lang), st.h))
    dev = p["device"]
    if dev is None:
        story.append(_p(_t("no_device", lang), st.cell))
    else:
        cap = dev["storage_capacity_bytes"]
        story.append(_kv([
            (_t("platform", lang), dev["platform"]),
            (_t("manufacturer", lang), dev["manufacturer"]),
            (_t("model", lang), " / ".join(x for x in (dev["marketing_name"], dev["model"]) if x)),
            (_t("model_number", lang), dev["model_number"]),
            (_t("serial", lang), dev["serial"]),
            (_t("imeis", lang), ", ".join(dev["imeis"]) + (
                f" ({_t('imei_' + dev['imei_source'], lang)})"
                if dev.get("imei_source") else "") or "-"),
            *([(_t("meid", lang), dev["meid"])] if dev.get("meid") else []),
            *([(_t("udid", lang), dev["udid"])] if dev["udid"] else []),
            (_t("os", lang), f"{dev['os_name']} {dev['os_version']}"),
            (_t("capacity", lang), f"{cap / 1e9:.0f} GB ({cap} bytes)" if cap else "-"),
            (_t("encryption", lang), _table(messages.ENCRYPTION, dev["encryption"], lang)),
            (_t("media_type", lang), gettext(lang, dev["media_type"])),
        ], st))

    story.append(_p(_t("sanitization", lang), st.h))
    san = p["sanitization"]
    story.append(_kv([
        (_t("category", lang), _word(san["category"], lang) if san["performed"]
         else _t("not_performed", lang)),
        (_t("technique", lang), gettext(lang, san["technique"]) if san["technique"] else "-"),
        (_t("method", lang), san["method"] or "-"),
        (_t("manual", lang), _t("yes" if san["manual"] else "no", lang)),
        (_t("period", lang), f"{san['started_at'] or '-'}  /  {san['ended_at'] or '-'}"),
        (_t("tool", lang), f"{san['tool']['name']} {san['tool']['version']}"),
        (_t("standards", lang), ", ".join(san["standards"])),
    ], st))

    ver = p["verification"]
    rows: list[list[Any]] = [[_p(_t("check", lang), st.cell), _p(_t("kind", lang), st.cell),
                              _p(_t("status", lang), st.cell), _p(_t("method", lang), st.cell)]]
    for c in ver["checks"]:
        rows.append([_p(gettext(lang, c["title"]) or c["id"], st.cell),
                     _p(_table(messages.CHECK_KINDS, c["kind"], lang), st.cell),
                     _p(_table(messages.CHECK_STATUSES, c["status"], lang), st.cell),
                     _p(c["method"], st.small)])
    checks = Table(rows, colWidths=[54 * mm, 24 * mm, 16 * mm, 80 * mm], repeatRows=1)
    checks.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#b8c2cc")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f7")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    story.append(KeepTogether([
        _p(_t("verification", lang), st.h),
        _kv([(_t("technique_completed", lang), _word(ver["technique_completed"], lang)),
             (_t("data_unrecoverable", lang), _word(ver["data_unrecoverable"], lang))], st),
        Spacer(1, 1.5 * mm),
        checks,
    ]))

    if p["version"] >= 2:
        story.append(KeepTogether([_p(_t("handoff", lang), st.h),
                                   _kv(_handoff_rows(p["handoff"], lang), st)]))

    locks = p["locks"]
    story.append(_p(_t("locks", lang), st.h))
    story.append(_kv([
        (_t(name, lang), _word(locks[name]["state"], lang)
         + "".join(f"  [{c['id']}: {_table(messages.CHECK_STATUSES, c['status'], lang)}]"
                   for c in locks[name]["checks"]))
        for name in ("activation_lock", "google_frp", "mdm")
    ], st))
    summary = p["diagnostics"]["summary"]
    story.append(_p(_t("diagnostics", lang), st.h))
    story.append(_p("  ".join(f"{_table(messages.CHECK_STATUSES, k, lang)}: {v}"
                              for k, v in summary.items()), st.cell))

    cust = p["custody"]
    story.append(_p(_t("custody", lang), st.h))
    story.append(_kv([
        (_t("operator", lang), cust["operator"] or "-"),
        (_t("station", lang), cust["station_id"]),
        (_t("site", lang), cust["site"] or "-"),
        (_t("organisation", lang), cust["organisation"] or "-"),
        (_t("destination", lang), _word(p["destination"], lang)),
        *([(_t("booking", lang), f"{p['intake']['reference'] or '-'} "
            f"({_t('matched_by_' + p['intake']['matched_by'], lang)} "
            f"{p['intake']['identifier']})")] if p.get("intake") else []),
        (_t("ledger", lang),
         f"#{p['chain']['sequence']}  prev {p['chain']['previous_hash'] or '-'}"),
        (_t("sha256", lang), cert.sha256),
        (_t("signed_by", lang), f"{cert.chain[0].subject.rfc4514_string()} ({cert.alg}, "
                                f"kid {cert.kid})"),
    ], st))
    if url:
        story += [Spacer(1, 3 * mm), _p(_t("verify_link", lang), st.small),
                  _p(qr_content(cert, url), st.small)]
    else:
        story += [Spacer(1, 3 * mm), _p(_t("verify_hint", lang), st.small)]

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=14 * mm,
        bottomMargin=14 * mm, title=f"{_t('title', lang)} {cert.certificate_id}",
        author="wipeagent", subject=cert.sha256, initialFontName=FONT_NAME,
    )
    doc.build(story)
    return buffer.getvalue()
