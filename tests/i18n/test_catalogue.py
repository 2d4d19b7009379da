"""The one message catalogue: complete in zh_CN and en, in step with the sources, and used
by the CLI, the page's code tables and the PDF."""

from __future__ import annotations

import subprocess
from pathlib import Path

from babel.messages.pofile import read_po

from wipeagent.i18n import catalogue, gettext, locale_name, translator
from wipeagent.i18n.check import problems
from wipeagent.i18n.messages import all_codes, code_text

ROOT = Path(__file__).resolve().parents[2]


def test_every_msgid_is_translated_in_every_language() -> None:
    assert problems() == []


def test_template_is_what_the_sources_mark(tmp_path: Path) -> None:
    """A text marked in the code but missing from the committed template (and so from the
    translations) fails here: run `scripts/i18n extract` and translate it."""
    out = tmp_path / "fresh.pot"
    subprocess.run([str(ROOT / ".venv" / "bin" / "pybabel"), "-q", "extract", "-F",
                    "babel.cfg", "-k", "N_", "-k", "_", "-k", "fill", "-k", "make:2",
                    "-k", "error:2", "--no-location", "-o", str(out), "."],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    with out.open("rb") as f:
        fresh = {m.id for m in read_po(f) if m.id}
    with (ROOT / "wipeagent" / "i18n" / "wipeagent.pot").open("rb") as f:
        committed = {m.id for m in read_po(f) if m.id}
    assert fresh == committed


def test_every_code_has_words_in_chinese() -> None:
    zh = translator("zh-CN")
    for table, entries in all_codes().items():
        for code, text in entries.items():
            assert zh(text) != text, (table, code)
    assert code_text(zh, "check_warning:android.verify.encryption",
                     {"android.verify.encryption": "Encryption"}) == "检查项有警告：加密。"
    assert code_text(zh, "a_code_from_the_future") == "a_code_from_the_future"


def test_language_tags() -> None:
    assert [locale_name(x) for x in ("zh-CN", "zh", "zh_CN.UTF-8", "en_GB.UTF-8", "", "fr")] \
        == ["zh_CN", "zh_CN", "zh_CN", "en", "en", "en"]
    assert gettext("zh", "Sign in") == "登录" and gettext("en", "Sign in") == "Sign in"
    assert catalogue("zh-CN")["Confirm"] == "确认"
    assert translator("zh").fill("Needs you (%(n)s)", n=3) == "待处理（3）"
