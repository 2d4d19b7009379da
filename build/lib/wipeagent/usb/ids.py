"""Vendor / product names and Apple mode product ids, loaded from `usb_ids.toml`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from wipeagent.errors import ConfigError

DATA_FILE = "usb_ids.toml"


@dataclass(frozen=True)
class Vendor:
    name: str
    phone_maker: bool


@dataclass(frozen=True)
class UsbIds:
    """The parsed data file. Build with `load_ids()` (cached) or `parse_ids(text)`."""

    vendors: dict[int, Vendor]
    products: dict[tuple[int, int], str]
    apple_recovery: frozenset[int]
    apple_dfu: frozenset[int]
    apple_mobile_ranges: tuple[tuple[int, int], ...]

    def vendor_name(self, vid: int) -> str:
        """The vendor's name, or "" when the data file does not know it."""
        vendor = self.vendors.get(vid)
        return vendor.name if vendor else ""

    def product_name(self, vid: int, pid: int) -> str:
        """The product's name, or "" when the data file does not know it."""
        return self.products.get((vid, pid), "")

    def is_phone_maker(self, vid: int) -> bool:
        vendor = self.vendors.get(vid)
        return bool(vendor and vendor.phone_maker)

    def is_apple_mobile(self, pid: int) -> bool:
        return any(lo <= pid <= hi for lo, hi in self.apple_mobile_ranges)


def _hex16(text: str, what: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise ConfigError(f"{DATA_FILE}: bad {what} {text!r} (want 4 hex digits)") from None
    if len(text) != 4 or not 0 <= value <= 0xFFFF:
        raise ConfigError(f"{DATA_FILE}: bad {what} {text!r} (want 4 hex digits)")
    return value


def _id_list(table: dict[str, Any], key: str) -> frozenset[int]:
    values = table.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{DATA_FILE}: [apple] {key} must be a list of integers")
    return frozenset(values)


def parse_ids(text: str) -> UsbIds:
    """Parse and validate the data file's text; raises ConfigError on any bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{DATA_FILE}: {exc}") from exc
    vendors: dict[int, Vendor] = {}
    for key, entry in data.get("vendors", {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{DATA_FILE}: vendor {key!r} needs a name")
        vendors[_hex16(key, "vendor id")] = Vendor(entry["name"], bool(entry.get("phone_maker")))
    products: dict[tuple[int, int], str] = {}
    for key, name in data.get("products", {}).items():
        vid, sep, pid = key.partition(":")
        if not sep or not isinstance(name, str):
            raise ConfigError(f'{DATA_FILE}: product {key!r} must be "vvvv:pppp" = "name"')
        products[(_hex16(vid, "vendor id"), _hex16(pid, "product id"))] = name
    apple = data.get("apple", {})
    ranges: list[tuple[int, int]] = []
    for pair in apple.get("mobile_product_id_ranges", []):
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)
        ):
            raise ConfigError(f"{DATA_FILE}: [apple] mobile_product_id_ranges wants [lo, hi]")
        ranges.append((pair[0], pair[1]))
    return UsbIds(
        vendors=vendors,
        products=products,
        apple_recovery=_id_list(apple, "recovery_product_ids"),
        apple_dfu=_id_list(apple, "dfu_product_ids"),
        apple_mobile_ranges=tuple(ranges),
    )


@cache
def load_ids() -> UsbIds:
    """The data file shipped inside the package (parsed once per process)."""
    return parse_ids(files("wipeagent.usb").joinpath(DATA_FILE).read_text(encoding="utf-8"))
