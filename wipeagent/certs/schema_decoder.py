"""The payload JSON Schema compiled into msgspec types: parsing and schema check in one pass.

The JSON Schema files (schema/certificate-v<N>.json) stay the published contract and
jsonschema-rs the validator that decides. This module is a fast path in front of it:
`compile_schema` turns a schema into msgspec types (TypedDicts, constrained strings and
integers, Literals, lists, dicts, unions) and `SchemaDecoder.decode` returns a payload only
when both hold:

1. msgspec decodes the bytes into those types (every keyword the schema uses checked); and
2. the sorted compact re-encoding of the decoded value (orjson, as in jws.parse_payload)
   is byte for byte the input.

(2) proves the value is exactly what any JSON parser reads from the bytes: a duplicate
key, a member the types do not name (a TypedDict drops it), a number read back another
way or any other spelling would be missing from, or differ in, the re-encoding. So a
returned payload is what the strict parser would return and is valid under the schema;
for anything else `decode` returns None and the caller parses strictly and lets
jsonschema-rs decide (and explain). tests/certs/test_certs_schema_decoder.py checks that
the two agree on the corpus and on hypothesis mutations.

The compiler knows only the keywords our schemas use, each with the same meaning as in
JSON Schema 2020-12; anything else raises UnsupportedSchema (a schema change the fast path
cannot follow fails the tests, never loosens a check). Notably:
- `pattern` must be `^...$` over a small ECMA-262 / Python common subset (literals,
  escaped punctuation, ASCII classes without negation, groups, `|`, greedy quantifiers)
  and is matched as `\\A(?:...)\\Z` (Python's `$` would also match before a final newline;
  a top-level `|`, as in `^a|b$`, is thereby read more strictly than ECMA-262 reads it,
  which can only send a payload to the full path, never let one through);
- `oneOf` only over branches of disjoint JSON types (then "exactly one" = "any");
- `integer` is msgspec's `int` (a JSON integer; `1.0`, which JSON Schema also counts as an
  integer, is left to the full path), `number` is `int | float`; booleans are neither.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, NotRequired, TypedDict, Union

import msgspec
import orjson

__all__ = ["SchemaDecoder", "UnsupportedSchema", "compile_schema"]


class UnsupportedSchema(ValueError):
    """The schema uses a keyword (or a form of one) the compiler does not implement."""


# Keywords that never change what validates.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description"})
# Literal characters with the same meaning in ECMA-262 and Python regular expressions.
_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     " !\"#%&',-/:;<=>@_`~")
# Punctuation that, escaped with a backslash, is that character in both dialects.
_ESCAPABLE = frozenset(".-/\\[](){}?*+|^$")
_QUANTIFIER = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")


def _class_end(body: str, start: int) -> int:
    """Index after the character class opening at body[start] ('['); UnsupportedSchema
    for negation, nesting, set operations or characters outside printable ASCII."""
    i = start + 1
    if body[i:i + 1] in ("^", "]", ""):
        raise UnsupportedSchema(f"character class at {start} in {body!r}")
    while i < len(body) and body[i] != "]":
        char = body[i]
        if char == "\\":
            if body[i + 1:i + 2] not in _ESCAPABLE or i + 1 >= len(body):
                raise UnsupportedSchema(f"escape in a class in {body!r}")
            i += 2
        elif char == "[" or body[i:i + 2] in ("--", "&&", "~~", "||") or not " " <= char <= "~":
            raise UnsupportedSchema(f"class member {char!r} in {body!r}")
        else:
            i += 1
    if i >= len(body):
        raise UnsupportedSchema(f"unterminated class in {body!r}")
    return i + 1


def _check_regex_body(body: str) -> None:
    """UnsupportedSchema unless `body` is in the subset both dialects read alike."""
    i, depth, after_atom = 0, 0, False
    while i < len(body):
        char = body[i]
        if char == "\\":
            if body[i + 1:i + 2] not in _ESCAPABLE or i + 1 >= len(body):
                raise UnsupportedSchema(f"escape at {i} in {body!r}")
            i, after_atom = i + 2, True
        elif char == "[":
            i, after_atom = _class_end(body, i), True
        elif char in "?*+":
            if not after_atom:
                raise UnsupportedSchema(f"quantifier at {i} in {body!r}")
            i, after_atom = i + 1, False  # no lazy (??) or possessive (*+) forms
        elif char == "{":
            match = _QUANTIFIER.match(body, i)
            if match is None or not after_atom:
                raise UnsupportedSchema(f"brace at {i} in {body!r}")
            i, after_atom = match.end(), False
        elif char == "(":
            if body.startswith("(?", i):
                if not body.startswith("(?:", i):
                    raise UnsupportedSchema(f"group syntax at {i} in {body!r}")
                i += 1
            depth, i, after_atom = depth + 1, i + 2 if body.startswith("?:", i) else i + 1, False
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise UnsupportedSchema(f"unbalanced ')' in {body!r}")
            i, after_atom = i + 1, True
        elif char == "|":
            i, after_atom = i + 1, False
        elif char in _LITERAL:
            i, after_atom = i + 1, True
        else:
            raise UnsupportedSchema(f"{char!r} at {i} in {body!r}")
    if depth:
        raise UnsupportedSchema(f"unbalanced '(' in {body!r}")


def python_pattern(pattern: str) -> str:
    """A schema `pattern` as a Python regex with the same meaning (anchored, see module)."""
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")):
        raise UnsupportedSchema(f"pattern {pattern!r} is not anchored ^...$")
    body = pattern[1:-1]
    _check_regex_body(body)
    return f"\\A(?:{body})\\Z"


def _json_types(node: dict[str, Any], resolve: Callable[[str], dict[str, Any]]) -> set[str]:
    """The JSON types a (compiled) node can match, for oneOf's disjointness."""
    if "$ref" in node:
        return _json_types(resolve(node["$ref"]), resolve)
    if "type" in node:
        kind = node["type"]
        if not isinstance(kind, str):
            raise UnsupportedSchema(f"type {kind!r}")
        return {"integer", "number"} if kind in ("integer", "number") else {kind}
    values = [node["const"]] if "const" in node else node.get("enum")
    if values is not None:
        return {_type_of(value) for value in values}
    if "oneOf" in node:
        return set().union(*(_json_types(branch, resolve) for branch in node["oneOf"]))
    raise UnsupportedSchema(f"no type for {sorted(node)}")


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer"
    raise UnsupportedSchema(f"enum/const value {value!r}")


def _meta(**constraints: Any) -> msgspec.Meta | None:
    given = {k: v for k, v in constraints.items() if v is not None}
    return msgspec.Meta(**given) if given else None


def _constrained(base: Any, meta: msgspec.Meta | None) -> Any:
    return base if meta is None else Annotated[base, meta]


class _Compiler:
    def __init__(self, schema: dict[str, Any], name: str) -> None:
        self.schema = schema
        self.name = name
        self.defs: dict[str, Any] = {}
        self.count = 0

    def resolve(self, ref: str) -> dict[str, Any]:
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix):] not in self.schema.get("$defs", {}):
            raise UnsupportedSchema(f"$ref {ref!r}")
        node: dict[str, Any] = self.schema["$defs"][ref[len(prefix):]]
        return node

    def compile(self, node: Any, where: str) -> Any:
        if not isinstance(node, dict):
            raise UnsupportedSchema(f"{where}: schema {node!r}")
        keys = set(node) - _ANNOTATIONS
        if "$ref" in keys:
            if keys != {"$ref"}:
                raise UnsupportedSchema(f"{where}: $ref beside {sorted(keys)}")
            ref = node["$ref"]
            if ref not in self.defs:
                self.defs[ref] = self.compile(self.resolve(ref), ref)
            return self.defs[ref]
        if "const" in keys or "enum" in keys:
            if len(keys) != 1:
                raise UnsupportedSchema(f"{where}: {sorted(keys)}")
            values = [node["const"]] if "const" in node else list(node["enum"])
            for value in values:
                _type_of(value)  # str, int or null only
            strings_and_ints = tuple(v for v in values if v is not None)
            literal: Any = Literal.__getitem__(strings_and_ints) if strings_and_ints else None
            if None in values:
                return literal | None if literal is not None else None
            return literal
        if "oneOf" in keys:
            if len(keys) != 1:
                raise UnsupportedSchema(f"{where}: oneOf beside {sorted(keys - {'oneOf'})}")
            branches = node["oneOf"]
            seen: set[str] = set()
            for branch in branches:
                types = _json_types(branch, self.resolve)
                if types & seen:
                    raise UnsupportedSchema(f"{where}: oneOf branches overlap on {types & seen}")
                seen |= types
            compiled = [self.compile(branch, f"{where}/oneOf") for branch in branches]
            return Union.__getitem__(tuple(compiled))
        kind = node.get("type")
        handler = {"string": self._string, "integer": self._integer, "number": self._number,
                   "boolean": self._boolean, "null": self._null, "array": self._array,
                   "object": self._object}.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise UnsupportedSchema(f"{where}: type {kind!r}")
        return handler(node, keys - {"type"}, where)

    @staticmethod
    def _only(keys: set[str], allowed: set[str], where: str) -> None:
        if keys - allowed:
            raise UnsupportedSchema(f"{where}: keywords {sorted(keys - allowed)}")

    def _string(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        self._only(keys, {"maxLength", "minLength", "pattern"}, where)
        pattern = node.get("pattern")
        return _constrained(str, _meta(
            max_length=node.get("maxLength"), min_length=node.get("minLength"),
            pattern=python_pattern(pattern) if pattern is not None else None))

    def _integer(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        self._only(keys, {"minimum", "maximum"}, where)
        for bound in ("minimum", "maximum"):
            if bound in node and _type_of(node[bound]) != "integer":
                raise UnsupportedSchema(f"{where}: {bound} {node[bound]!r}")
        return _constrained(int, _meta(ge=node.get("minimum"), le=node.get("maximum")))

    def _number(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        self._only(keys, set(), where)
        return int | float

    def _boolean(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        self._only(keys, set(), where)
        return bool

    def _null(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        self._only(keys, set(), where)
        return None

    def _array(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        self._only(keys, {"items", "maxItems", "minItems"}, where)
        if "items" not in node:
            raise UnsupportedSchema(f"{where}: array without items")
        item = self.compile(node["items"], f"{where}/items")
        return _constrained(list[item], _meta(  # type: ignore[valid-type]
            max_length=node.get("maxItems"), min_length=node.get("minItems")))

    def _object(self, node: dict[str, Any], keys: set[str], where: str) -> Any:
        extra = node.get("additionalProperties")
        if "properties" in node:
            # A record: named members only (a member it does not name is dropped by the
            # TypedDict, which the re-encoding comparison then catches).
            self._only(keys, {"properties", "required", "additionalProperties"}, where)
            if extra is not False:
                raise UnsupportedSchema(f"{where}: properties without additionalProperties false")
            required = set(node.get("required", ()))
            if not required <= set(node["properties"]):
                raise UnsupportedSchema(f"{where}: required names an undeclared member")
            fields: dict[str, Any] = {}
            for member, sub in node["properties"].items():
                compiled = self.compile(sub, f"{where}/{member}")
                fields[member] = compiled if member in required else NotRequired[compiled]
            self.count += 1
            return TypedDict(f"{self.name}_{self.count}", fields)  # type: ignore[operator]
        # A map: any member names, each value of one schema.
        self._only(keys, {"additionalProperties", "maxProperties", "minProperties",
                          "propertyNames"}, where)
        if not isinstance(extra, dict):
            raise UnsupportedSchema(f"{where}: object without properties or a value schema")
        names = node.get("propertyNames", {"type": "string"})
        key = self._string({**names, "type": "string"}, set(names) - {"type"},
                           f"{where}/propertyNames") if names.get("type", "string") == "string" \
            else None
        if key is None:
            raise UnsupportedSchema(f"{where}: propertyNames {names!r}")
        value = self.compile(extra, f"{where}/additionalProperties")
        return _constrained(dict[key, value], _meta(  # type: ignore[valid-type]
            max_length=node.get("maxProperties"), min_length=node.get("minProperties")))


def compile_schema(schema: dict[str, Any], name: str = "Payload") -> Any:
    """msgspec types accepting exactly what `schema` accepts (see the module docstring)."""
    return _Compiler(schema, name).compile(schema, "#")


class SchemaDecoder:
    """Decodes canonical JSON bytes valid under one schema in a single pass (see module)."""

    def __init__(self, schema: dict[str, Any], name: str = "Payload") -> None:
        self._decode = msgspec.json.Decoder(compile_schema(schema, name)).decode

    def decode(self, data: bytes) -> Any:
        """The JSON value of `data` when it is valid under the schema and spelled exactly
        as its sorted compact re-encoding, else None (the full path decides)."""
        try:
            value = self._decode(data)
            # orjson's sorted encoding (3 µs for a payload; msgspec's order="sorted" is
            # slower) is the one jws.parse_payload compares with: the same canonical form.
            again = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (msgspec.MsgspecError, orjson.JSONEncodeError, ValueError, RecursionError):
            # (ValueError: msgspec reports invalid UTF-8 as UnicodeDecodeError.) The full
            # path refuses and explains.
            return None
        return value if again == data else None
