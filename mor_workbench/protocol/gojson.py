"""Encode JSON byte for byte as Go's encoding/json does, so signatures over it match live peers.

Go escapes < > & as \\u003c \\u003e \\u0026 and U+2028/U+2029 (HTML safety), writes \\n \\r \\t
\\b \\f short, other control characters as \\u00XX, replaces invalid UTF-8 (here: lone
surrogates) with \\ufffd, and leaves all other characters as UTF-8. Objects keep the order given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["go_object", "go_string"]

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')
# The ASCII characters Go writes as they are: deleting them from an ASCII string leaves
# nothing when it needs no escape (a C-speed test; hex, ids and keys are all like this).
_PLAIN_ASCII = bytes(range(0x20, 0x80)).translate(None, b'"\\<>&')


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _SHORT:
        return _SHORT[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\\ufffd"
    return f"\\u{ord(ch):04x}"


def go_string(value: str) -> str:
    """A JSON string literal exactly as Go's json.Marshal writes it."""
    if value.isascii() and not value.encode("ascii").translate(None, _PLAIN_ASCII):
        return '"' + value + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape, value) + '"'


def go_object(members: Iterable[tuple[str, str]]) -> str:
    """A JSON object from (key, already-encoded value) pairs, in order, with no spaces."""
    return "{" + ",".join(f"{go_string(k)}:{v}" for k, v in members) + "}"
