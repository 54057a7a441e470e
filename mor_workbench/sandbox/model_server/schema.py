"""Deterministic values that satisfy JSON schemas: tool-call arguments and structured output."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from mor_workbench.sandbox.model_server.text import NOUNS, Draws, phrase

__all__ = ["Literals", "schema_value"]

_FORMATS = {
    "date-time": "2026-01-15T12:00:00Z",
    "date": "2026-01-15",
    "time": "12:00:00Z",
    "duration": "PT1H",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/resource",
    "iri": "https://example.com/resource",
    "uri-reference": "https://example.com/resource",
    "url": "https://example.com/resource",
}
_Schema = dict[str, Any]


class Literals:
    """The numbers and quoted strings of a prompt, handed out in order: what a model asked for
    "magic_function(3)" or "a customer named '你好'" puts in the arguments."""

    _NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
    _QUOTED = re.compile(r"'([^'\n]{1,200})'|\"([^\"\n]{1,200})\"")

    def __init__(self, prompt: str) -> None:
        self.text = prompt
        self.numbers = [float(n) for n in self._NUMBER.findall(prompt)]
        self.quoted = [a or b for a, b in self._QUOTED.findall(prompt)]

    def names(self) -> list[str]:
        """Quoted words that can be JSON keys ("with 'setup' and 'punchline' keys")."""
        return [q for q in self.quoted if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", q)]

    def take(self, schema: _Schema) -> Any:
        """The next literal that fits a plain number or string schema, or the enum member the
        prompt names first; else None."""
        if "enum" in schema:
            named = [v for v in schema["enum"] if isinstance(v, str) and v and v in self.text]
            return min(named, key=self.text.index) if named else None
        if any(k in schema for k in ("const", "format", "pattern")):
            return None
        kind = schema.get("type")
        if kind in ("integer", "number"):
            low, high = _bounds(schema, 1e-6)
            for i, n in enumerate(self.numbers):
                fits = (kind == "number" or n.is_integer()) and (low is None or n >= low)
                if fits and (high is None or n <= high):
                    del self.numbers[i]
                    return int(n) if kind == "integer" else n
        elif kind == "string":
            low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
            for i, q in enumerate(self.quoted):
                if len(q) >= low and (high is None or len(q) <= high):
                    del self.quoted[i]
                    return q
        return None


def schema_value(
    schema: _Schema | bool, seed: int | str = 0, literals: Literals | None = None
) -> Any:
    """A value satisfying `schema`, the same for the same (schema, seed, literals).

    Handles types (and type lists), enum/const, numeric bounds and multipleOf, string lengths
    and formats, objects with nested and required properties, arrays (min/max/unique/prefix
    items), anyOf/oneOf/allOf and local $refs; `pattern` is met only by luck (a few candidates).
    With `literals`, the top-level object's plain number and string properties take the
    prompt's literals first, in order.
    """
    draws = Draws(f"schema:{seed}".encode())
    root = schema if isinstance(schema, dict) else {}
    value = _value(schema, draws, root, 0)
    if literals is not None and isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties") or {}
        for name in list(value):
            prop = props.get(name)
            if isinstance(prop, dict) and "$ref" in prop:
                prop = _resolve(prop["$ref"], root)
            taken = literals.take(prop) if isinstance(prop, dict) else None
            if taken is not None:
                value[name] = taken
    return value


def _value(schema: Any, draws: Draws, root: _Schema, depth: int) -> Any:
    if not isinstance(schema, dict):
        return "value"  # `true`: anything goes (`false` cannot be satisfied)
    if depth > 32:
        return None
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _value({**_resolve(schema["$ref"], root), **rest}, draws, root, depth + 1)
    if "allOf" in schema:
        return _value(_merge_all_of(schema), draws, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return draws.pick(schema["enum"]) if schema["enum"] else None
    for key in ("anyOf", "oneOf"):
        if key in schema:  # the first option that is not null
            options = [o for o in schema[key] if not (isinstance(o, dict) and _is_null(o))]
            choice = options[0] if options else {"type": "null"}
            rest = {k: v for k, v in schema.items() if k != key}
            return _value({**rest, **choice}, draws, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        elif any(k in schema for k in ("minimum", "maximum", "multipleOf")):
            kind = "number"
        else:
            kind = "string"
    return _MAKERS.get(kind, _string)(schema, draws, root, depth)


def _is_null(schema: _Schema) -> bool:
    return schema.get("type") == "null"


def _resolve(ref: str, root: _Schema) -> _Schema:
    """A local reference ("#/$defs/Thing"); anything else resolves to {} (anything goes)."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _merge_all_of(schema: _Schema) -> _Schema:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = sorted({*merged.get("required", []), *value})
            else:
                merged.setdefault(key, value)
    return merged


def _object(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    props: _Schema = schema.get("properties") or {}
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    # Every property near the top; deep in a recursive schema only the required ones, so it ends.
    names = list(props) if depth < 4 else [p for p in props if p in required]
    out = {name: _value(props[name], draws, root, depth + 1) for name in names}
    extra = schema.get("additionalProperties", True)
    extra_schema = extra if isinstance(extra, dict) else {"type": "string"}
    for name in required:
        if name not in out:
            out[name] = _value(extra_schema, draws, root, depth + 1)
    index = 0
    while len(out) < int(schema.get("minProperties", 0)) and extra is not False:
        index += 1
        out.setdefault(f"key{index}", _value(extra_schema, draws, root, depth + 1))
    return out


def _array(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    prefix = schema.get("prefixItems") or []
    items = schema.get("items", {})
    if isinstance(items, list):  # draft-07 tuple form
        prefix, items = items, schema.get("additionalItems", {})
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", max(low, 2, len(prefix))))
    count = max(low, min(high, max(2 if depth < 4 else 0, len(prefix))))
    unique = bool(schema.get("uniqueItems"))
    enum = items.get("enum") if isinstance(items, dict) else None
    out: list[Any] = []
    seen: set[str] = set()
    for index in range(count + (16 if unique else 0)):  # spare tries to find distinct values
        if len(out) >= count:
            break
        if index < len(prefix):
            value = _value(prefix[index], draws, root, depth + 1)
        elif unique and enum:
            if index - len(prefix) >= len(enum):
                break
            value = enum[index - len(prefix)]
        else:
            value = _value(items, draws, root, depth + 1)
        key = json.dumps(value, sort_keys=True)
        if unique and key in seen:
            continue
        seen.add(key)
        out.append(value)
    return out


def _bounds(schema: _Schema, step: float) -> tuple[float | None, float | None]:
    """Inclusive bounds, with exclusive ones (draft-04 booleans or draft-06+ numbers) moved in."""
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if ex_low is True:
        low = None if low is None else low + step
    elif isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low = ex_low + step if low is None else max(low, ex_low + step)
    if ex_high is True:
        high = None if high is None else high - step
    elif isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high = ex_high - step if high is None else min(high, ex_high - step)
    return low, high


def _integer(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    low_f, high_f = _bounds(schema, 1)
    if low_f is not None:
        low = math.ceil(low_f)
    else:
        low = 0 if high_f is None or high_f >= 0 else math.floor(high_f) - 100
    high = math.floor(high_f) if high_f is not None else low + 100
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int) and multiple > 0:
        first = -(-low // multiple) * multiple
        return first + multiple * draws.below(max(0, (high - first) // multiple) + 1)
    return low + draws.below(high - low + 1)


def _number(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    low_b, high_b = _bounds(schema, 1e-6)
    if low_b is not None:
        low = float(low_b)
    else:
        low = 0.0 if high_b is None or high_b >= 0 else float(high_b) - 100.0
    high = float(high_b) if high_b is not None else low + 100.0
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        first = math.ceil(low / multiple)
        steps = max(0, math.floor(high / multiple) - first)
        for k in range(draws.below(min(steps, 1000) + 1), steps + 1):
            value = (first + k) * multiple  # one whose quotient is exact in floating point
            if (value / multiple).is_integer() and low <= value <= high:
                return value
        return first * multiple
    value = round(low + (high - low) * draws.below(1001) / 1000, 3)
    return min(max(value, low), high)


def _boolean(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    return draws.below(2) == 1


def _null(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    return None


def _string(schema: _Schema, draws: Draws, root: _Schema, depth: int) -> Any:
    fmt = schema.get("format")
    if fmt == "uuid":
        h = draws.hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}"
    text = _FORMATS.get(fmt) or " ".join(phrase(draws))
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    while len(text) < low:
        text += " " + draws.pick(NOUNS)
    if high is not None:
        text = text[: int(high)]
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not _matches(pattern, text):
        for candidate in (draws.pick(NOUNS), "a", "A", "0", "1", "ab12", "example", ""):
            if _matches(pattern, candidate) and low <= len(candidate) <= (high or 1 << 30):
                return candidate
    return text


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True


_MAKERS: dict[str, Callable[[_Schema, Draws, _Schema, int], Any]] = {
    "object": _object,
    "array": _array,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
    "string": _string,
}
