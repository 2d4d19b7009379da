"""`python -m wipeagent.i18n.check`: the catalogue is complete (`scripts/i18n check`).

Every msgid of the template (wipeagent/i18n/wipeagent.pot, what `scripts/i18n extract`
finds in the sources) has a non-empty, non-fuzzy translation in every catalogue, and the
placeholders (`%(name)s`) of each translation are the msgid's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from wipeagent.i18n import CATALOGUES, DOMAIN, locale_dir

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def problems(root: Path | None = None) -> list[str]:
    """What is missing or wrong, one line each (empty: complete)."""
    base = root or locale_dir()
    with (base.parent / f"{DOMAIN}.pot").open("rb") as f:
        template = {m.id for m in read_po(f) if m.id}
    found: list[str] = []
    for lang in CATALOGUES:
        with (base / lang / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as f:
            catalogue = {m.id: m for m in read_po(f, locale=lang) if m.id}
        for msgid in sorted(template):
            message = catalogue.get(msgid)
            if message is None or not message.string or message.fuzzy:
                found.append(f"{lang}: not translated: {msgid!r}")
            elif set(_PLACEHOLDER.findall(str(msgid))) != set(
                    _PLACEHOLDER.findall(str(message.string))):
                found.append(f"{lang}: placeholders differ: {msgid!r}")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
