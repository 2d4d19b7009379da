"""Hardware identifiers of phones: IMEI and MEID, validated the one way everywhere.

An IMEI (3GPP TS 23.003 section 6.2.1) is 14 digits plus a Luhn check digit: 15 decimal
digits. A MEID (3GPP2 S.R0048) is 14 hexadecimal digits (its optional check digit is not
part of the identifier a phone reports). Phones, technicians and platform feeds all hand
us these strings; each one is checked here before it is compared, stored or signed.
"""

from __future__ import annotations

import re

IMEI_RE = re.compile(r"^[0-9]{15}$")
MEID_RE = re.compile(r"^[0-9A-F]{14}$")


def luhn_ok(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1 annex B) over a string of decimal digits."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def valid_imei(value: str) -> bool:
    """15 decimal digits whose last one is the Luhn check digit of the first 14, and not
    all zeros (what a phone with a blank NV item reports)."""
    return bool(IMEI_RE.fullmatch(value)) and luhn_ok(value) and value.strip("0") != ""


def valid_meid(value: str) -> bool:
    """14 upper-case hexadecimal digits, not all zeros."""
    return bool(MEID_RE.fullmatch(value)) and value.strip("0") != ""
