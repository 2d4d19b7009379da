"""One message catalogue for every technician-facing text: the bench page, the CLI's
messages and hints, reasons and exceptions, and the values in the PDF certificate.

gettext catalogues managed with Babel (`babel.cfg` at the top of the repository):
`wipeagent/i18n/locale/<lang>/LC_MESSAGES/wipeagent.po` is committed; `scripts/setup`
compiles it to `.mo` (`scripts/i18n compile`). English is the source language (the msgid
is the English text); `zh_CN` is Simplified Chinese. A msgid is marked with `N_()` where
it is defined and translated where it is shown, so the signed certificate and the API keep
stable machine codes and only the rendering changes.

Language tags: "en", "zh-CN" (the page, BCP 47) and "zh" (certificates.language) both
name the catalogues "en" / "zh_CN".
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

DOMAIN = "wipeagent"
PAGE_LANGUAGES = ("en", "zh-CN")
CATALOGUES = ("en", "zh_CN")
_ALIASES = {"en": "en", "en-us": "en", "en_us": "en", "en-gb": "en", "zh": "zh_CN",
            "zh-cn": "zh_CN", "zh_cn": "zh_CN", "zh-hans": "zh_CN", "zh_hans": "zh_CN"}


def N_(message: str) -> str:  # the gettext convention for "mark only"
    """Mark `message` for extraction without translating it here."""
    return message


def locale_name(language: str | None) -> str:
    """"zh-CN" / "zh" / "zh_CN.UTF-8" -> "zh_CN"; anything unknown -> "en"."""
    if not language:
        return "en"
    tag = language.split(".")[0].strip().lower()
    return _ALIASES.get(tag) or _ALIASES.get(tag.split("_")[0].split("-")[0], "en")


def locale_dir() -> Path:
    return Path(str(resources.files("wipeagent.i18n").joinpath("locale")))


@cache
def _messages(catalogue: str) -> dict[str, str]:
    """msgid -> msgstr of one catalogue: the compiled .mo, else the .po itself."""
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    base = locale_dir() / catalogue / "LC_MESSAGES"
    mo, po = base / f"{DOMAIN}.mo", base / f"{DOMAIN}.po"
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as f:
            parsed = read_mo(f)
    elif po.is_file():
        log.debug("%s is not compiled (scripts/setup compiles it); reading the .po", po)
        with po.open("rb") as f:
            parsed = read_po(f, locale=catalogue)
    else:
        return {}
    out: dict[str, str] = {}
    for message in parsed:
        if message.id and isinstance(message.id, str) and isinstance(message.string, str) \
                and message.string and not message.fuzzy:
            out[message.id] = message.string
    return out


def gettext(language: str | None, message: str) -> str:
    """`message` (an English msgid) in `language`; itself when not translated."""
    if not message:
        return message
    return _messages(locale_name(language)).get(message, message)


def translator(language: str | None) -> Translator:
    return Translator(locale_name(language))


class Translator:
    """`_ = translator("zh-CN")`; `_("Confirm")`, `_.fill("… %(n)s", n=3)`."""

    def __init__(self, catalogue: str) -> None:
        self.catalogue = catalogue
        self._table = _messages(catalogue)

    def __call__(self, message: str) -> str:
        return self._table.get(message, message) if message else message

    def fill(self, msgid: str, /, **params: object) -> str:
        """Translate, then fill `%(name)s` placeholders (values are not translated)."""
        text = self(msgid)
        try:
            return text % params if params else text
        except (KeyError, ValueError, TypeError):
            return msgid % params if params else msgid


def catalogue(language: str) -> dict[str, str]:
    """Every translated message of `language` (for the bench page)."""
    return dict(_messages(locale_name(language)))
