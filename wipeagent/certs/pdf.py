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
from reportlab.graphics.shapes import Drawing, Rect
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from wipeagent.certs.verify import VerifiedCertificate
from wipeagent.errors import ConfigError

DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_NAME = "WipeagentCJK"
LANGUAGES = ("en", "zh")

_TEXT: dict[str, dict[str, str]] = {
    "title": {"en": "Certificate of Media Sanitization", "zh": "数据清除（介质净化）证书"},
    "dev": {
        "en": "DEVELOPMENT CERTIFICATE - NOT VALID AS PROOF OF ERASURE",
        "zh": "开发测试证书 —— 不能作为数据清除证明",
    },
    "outcome": {"en": "Outcome", "zh": "结果"},
    "erased": {"en": "ERASED", "zh": "已清除"},
    "erased_with_exceptions": {"en": "ERASED WITH EXCEPTIONS", "zh": "已清除（有例外）"},
    "not_erased": {"en": "NOT ERASED", "zh": "未清除"},
    "reasons": {"en": "Reasons", "zh": "原因"},
    "exceptions": {"en": "Exceptions", "zh": "例外"},
    "certificate": {"en": "Certificate", "zh": "证书"},
    "certificate_id": {"en": "Certificate ID", "zh": "证书编号"},
    "issued_at": {"en": "Issued (UTC)", "zh": "签发时间（UTC）"},
    "sha256": {"en": "SHA-256 of signed file", "zh": "签名文件 SHA-256"},
    "ledger": {"en": "Station ledger", "zh": "工位台账"},
    "device": {"en": "Device", "zh": "设备"},
    "platform": {"en": "Platform", "zh": "平台"},
    "manufacturer": {"en": "Manufacturer", "zh": "制造商"},
    "model": {"en": "Model", "zh": "型号"},
    "model_number": {"en": "Model number", "zh": "型号代码"},
    "serial": {"en": "Serial number", "zh": "序列号"},
    "imeis": {"en": "IMEI", "zh": "IMEI"},
    "udid": {"en": "UDID", "zh": "UDID"},
    "os": {"en": "Operating system", "zh": "操作系统"},
    "capacity": {"en": "Storage capacity", "zh": "存储容量"},
    "encryption": {"en": "Encryption", "zh": "加密"},
    "media_type": {"en": "Media type", "zh": "介质类型"},
    "no_device": {"en": "The device could not be identified.", "zh": "未能识别设备。"},
    "sanitization": {"en": "Sanitization", "zh": "净化"},
    "category": {"en": "NIST SP 800-88 category", "zh": "NIST SP 800-88 类别"},
    "technique": {"en": "Technique", "zh": "技术"},
    "method": {"en": "Method", "zh": "方法"},
    "manual": {"en": "Manual (guided) reset", "zh": "手动（引导）重置"},
    "period": {"en": "Started / ended (UTC)", "zh": "开始 / 结束（UTC）"},
    "tool": {"en": "Tool", "zh": "工具"},
    "standards": {"en": "Standards", "zh": "标准"},
    "not_performed": {"en": "not performed", "zh": "未执行"},
    "verification": {"en": "Verification", "zh": "验证"},
    "technique_completed": {"en": "Technique completed", "zh": "净化技术已完成"},
    "data_unrecoverable": {
        "en": "Data unrecoverable (checked means)", "zh": "数据不可恢复（按所查方法）",
    },
    "check": {"en": "Check", "zh": "检查项"},
    "kind": {"en": "Kind", "zh": "类型"},
    "status": {"en": "Status", "zh": "状态"},
    "locks": {"en": "Locks (as checked)", "zh": "锁定状态（按实际检查）"},
    "activation_lock": {"en": "Activation Lock / Find My", "zh": "激活锁 / 查找"},
    "google_frp": {"en": "Google FRP", "zh": "谷歌恢复出厂保护"},
    "mdm": {"en": "MDM / device management", "zh": "MDM / 设备管理"},
    "diagnostics": {"en": "Diagnostics summary", "zh": "诊断摘要"},
    "custody": {"en": "Performed by", "zh": "执行信息"},
    "operator": {"en": "Operator", "zh": "操作员"},
    "station": {"en": "Station", "zh": "工位"},
    "site": {"en": "Site", "zh": "地点"},
    "organisation": {"en": "Organisation", "zh": "机构"},
    "destination": {"en": "Post-sanitization destination", "zh": "净化后去向"},
    "signed_by": {"en": "Signed by", "zh": "签名者"},
    # With a verification URL the owner scans the QR code (or types the link) and the
    # platform's page checks the certificate in their browser; without one, only the
    # command line can (the QR code then holds a plain id + hash token).
    "verify_link": {
        "en": "Check this certificate yourself: scan the QR code with your phone's camera, "
              "or open this link in a browser. The page verifies the signature on your device:",
        "zh": "您可以亲自核验此证书：用手机相机扫描二维码，或在浏览器中打开下方链接。"
              "页面会在您的设备上核验签名：",
    },
    "verify_hint": {
        "en": "Verify: wipeagent verify FILE --trust ROOT.pem (the QR code holds the ID and hash)",
        "zh": "验证方法：wipeagent verify 文件 --trust 根证书.pem（二维码含证书编号与哈希）",
    },
    "confirmed": {"en": "confirmed", "zh": "已确认"},
    "failed": {"en": "FAILED", "zh": "失败"},
    "not_established": {"en": "not established", "zh": "未确认"},
    "not_applicable": {"en": "not applicable", "zh": "不适用"},
    "not_checked": {"en": "not checked", "zh": "未检查"},
    "not_present": {"en": "not present", "zh": "未发现"},
    "present": {"en": "PRESENT", "zh": "存在"},
    "inconclusive": {"en": "inconclusive", "zh": "无法确定"},
    "yes": {"en": "yes", "zh": "是"},
    "no": {"en": "no", "zh": "否"},
    "clear": {"en": "Clear", "zh": "清除（Clear）"},
    "purge": {"en": "Purge", "zh": "净化（Purge）"},
    "reuse": {"en": "reuse", "zh": "再利用"},
    "resale": {"en": "resale", "zh": "转售"},
    "recycling": {"en": "recycling", "zh": "回收"},
    "meid": {"en": "MEID", "zh": "MEID"},
    "imei_phone": {"en": "read from the phone", "zh": "从手机读取"},
    "imei_technician": {"en": "entered by the technician", "zh": "由技术员录入"},
    "booking": {"en": "Booking reference", "zh": "预约单号"},
    "matched_by_serial": {"en": "matched by serial number", "zh": "按序列号匹配"},
    "matched_by_imei": {"en": "matched by IMEI", "zh": "按 IMEI 匹配"},
    "handoff": {"en": "Hand-off: the state the phone leaves in", "zh": "交付：手机离开时的状态"},
    "handoff_none": {
        "en": "No hand-off: the phone was not erased and stays with the bench.",
        "zh": "无交付：手机未被清除，留在工位。",
    },
    "handoff_policy": {"en": "Hand-off", "zh": "交付方式"},
    "policy_restore": {
        "en": "settings put back and USB debugging turned off by the bench (each value read "
              "back)",
        "zh": "由工位恢复设置并关闭 USB 调试（每项均已回读）",
    },
    "policy_final_reset": {
        "en": "a second factory reset by the technician (attested by the technician, not "
              "verified by the bench)",
        "zh": "由技术员再次恢复出厂设置（技术员确认，工位未验证）",
    },
    "handoff_completed": {"en": "completed", "zh": "已完成"},
    "handoff_failed": {"en": "FAILED: see the exceptions above", "zh": "失败：见上方例外"},
    "attested_by": {"en": "Attested by", "zh": "确认人"},
    "r_restored": {"en": "done", "zh": "已完成"},
    "r_unchanged": {"en": "already so", "zh": "原本如此"},
    "r_not_restorable": {"en": "remains", "zh": "保持不变"},
    "r_failed": {"en": "NOT DONE", "zh": "未完成"},
    "r_observed": {"en": "observed", "zh": "观察到"},
    "r_attested": {"en": "attested", "zh": "已确认"},
}

# What each hand-off item means for the next owner, in words a buyer understands:
# (item id, result) -> sentence. Items without one are shown as "title: detail".
_HANDOFF_TEXT: dict[tuple[str, str], dict[str, str]] = {
    ("usb_debugging", "restored"): {
        "en": "USB debugging turned off.", "zh": "已关闭 USB 调试。"},
    ("bench_key", "not_restorable"): {
        "en": "This bench's key is still known to the phone until its next reset; it "
              "cannot be used while USB debugging is off.",
        "zh": "在下次恢复出厂设置前，手机仍记得本工位的密钥；"
              "USB 调试关闭时无法使用。"},
    ("package_verifier", "restored"): {
        "en": "Apps installed over USB are checked again (package verifier on).",
        "zh": "通过 USB 安装的应用重新接受检查（已开启应用验证）。"},
    ("automatic_updates", "restored"): {
        "en": "Automatic system updates turned back on.", "zh": "已重新开启系统自动更新。"},
    ("stay_awake", "restored"): {
        "en": "The screen no longer stays on while charging.", "zh": "充电时屏幕不再保持常亮。"},
    ("adb_key_expiry", "restored"): {
        "en": "USB debugging authorisations expire again.", "zh": "USB 调试授权重新会过期。"},
    ("location", "restored"): {
        "en": "Location turned off; the owner turns it on.",
        "zh": "已关闭位置信息，由新机主开启。"},
    ("developer_options", "restored"): {
        "en": "Developer options turned off.", "zh": "已关闭开发者选项。"},
    ("lock_screen", "restored"): {
        "en": "Lock screen turned back on (swipe); the owner sets a PIN.",
        "zh": "已恢复锁屏（滑动解锁），由新机主设置密码。"},
    ("setup_wizard", "not_restorable"): {
        "en": "The setup wizard was skipped: the phone starts at its home screen and the "
              "owner adds accounts in Settings.",
        "zh": "已跳过开机向导：手机直接进入主屏幕，新机主在设置中添加账号。"},
    ("test_harness_mode", "not_restorable"): {
        "en": "Until its next factory reset the phone tells apps it is in Test Harness "
              "Mode.",
        "zh": "在下次恢复出厂设置前，手机会告诉应用它处于测试模式"
              "（Test Harness Mode）。"},
    ("auto_sync", "not_restorable"): {
        "en": "Automatic account sync is off: the owner turns it on in Settings > Accounts.",
        "zh": "账号自动同步已关闭：新机主可在“设置 > 账号”中开启。"},
    ("final_reset", "attested"): {
        "en": "Reset once more by the technician to its out-of-box state (setup wizard, "
              "no USB debugging, no bench key); attested by the technician, not verified "
              "by the bench.",
        "zh": "技术员再次将手机恢复到出厂状态（开机向导、无 USB 调试、无工位密钥）；"
              "由技术员确认，工位未验证。"},
    ("setup_assistant", "observed"): {
        "en": "At Setup Assistant: the owner sets the phone up from the start.",
        "zh": "处于设置助理界面：新机主从头开始设置。"},
    ("activation_state", "observed"): {
        "en": "Activation as the phone reports it.", "zh": "手机报告的激活状态。"},
    ("activation_lock", "observed"): {
        "en": "Find My / Activation Lock as the phone itself reports it; only activation "
              "proves Activation Lock is off.",
        "zh": "“查找”/激活锁状态为手机自身的报告；只有激活才能证明激活锁已关闭。"},
    ("bench_pairing", "restored"): {
        "en": "This bench's pairing removed: the phone trusts no computer.",
        "zh": "已移除与本工位的配对：手机不信任任何电脑。"},
}


def _t(key: str, lang: str) -> str:
    return _TEXT[key][lang]


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


def _qr_drawing(content: str, size: float) -> Drawing:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    code.add_data(content)
    code.make(fit=True)
    matrix: list[list[bool]] = code.get_matrix()
    cell = size / len(matrix)
    drawing = Drawing(size, size)
    for row, line in enumerate(matrix):
        for col, dark in enumerate(line):
            if dark:  # vector modules: sharp at any zoom or printer resolution
                drawing.add(Rect(col * cell, size - (row + 1) * cell, cell, cell,
                                 fillColor=colors.black, strokeColor=None))
    return drawing


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
        sentence = _HANDOFF_TEXT.get((item["id"], item["result"]), {}).get(lang)
        if sentence is None or item["result"] == "failed":
            sentence = f"{item['title']}: {item['detail'] or item['result']}"
        elif item["result"] == "observed" and item["after"]:
            sentence = f"{sentence} [{item['after']}]"
        rows.append((_t(f"r_{item['result']}", lang), sentence))
    return rows


def _word(value: str | None, lang: str) -> str:
    if value is None:
        return "-"
    return _TEXT[value][lang] if value in _TEXT else value


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
          _qr_drawing(qr_content(cert, url), 32 * mm)]],
        colWidths=[140 * mm, 34 * mm],
    )
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story.append(head)
    outcome = p["outcome"]
    extra = [(_t("reasons", lang), r) for r in outcome["reasons"]]
    extra += [(_t("exceptions", lang), e) for e in outcome["exceptions"]]
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
            (_t("encryption", lang), dev["encryption"]),
            (_t("media_type", lang), dev["media_type"]),
        ], st))

    story.append(_p(_t("sanitization", lang), st.h))
    san = p["sanitization"]
    story.append(_kv([
        (_t("category", lang), _word(san["category"], lang) if san["performed"]
         else _t("not_performed", lang)),
        (_t("technique", lang), san["technique"] or "-"),
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
        rows.append([_p(c["title"] or c["id"], st.cell), _p(c["kind"], st.cell),
                     _p(c["status"], st.cell), _p(c["method"], st.small)])
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
         + "".join(f"  [{c['id']}: {c['status']}]" for c in locks[name]["checks"]))
        for name in ("activation_lock", "google_frp", "mdm")
    ], st))
    summary = p["diagnostics"]["summary"]
    story.append(_p(_t("diagnostics", lang), st.h))
    story.append(_p("  ".join(f"{k}: {v}" for k, v in summary.items()), st.cell))

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
