"""Split a TCP byte stream of concatenated JSON values (what Go's json.Decoder reads) into
objects, incrementally, with a size limit. Sans-IO: feed bytes, get parsed objects."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from mor_workbench.protocol.errors import RemoteProtocolError

__all__ = ["DEFAULT_MAX_MESSAGE", "PEER_REQUEST_LIMIT", "Decoder"]

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
# The largest request message our provider reads by default; consumers size prompts to fit.
PEER_REQUEST_LIMIT = 1024 * 1024
_WHITESPACE = b" \t\r\n"
_STRUCTURE = re.compile(rb'["{}\[\]]')
_IN_STRING = re.compile(rb'["\\]')


class Decoder:
    """Incremental splitter: `feed(data)` returns the complete top-level JSON objects so far.

    Any malformed input, a top-level value that is not an object, or a value longer than
    `max_message` bytes raises `RemoteProtocolError`; the decoder is unusable afterwards.

    `read_line`, when given, reads a message that fills a line (as every peer writes them)
    straight from its bytes (without the newline): what it returns, when not None, is given
    back in place of the parsed object; None leaves the line to the JSON parser.
    """

    def __init__(
        self,
        max_message: int = DEFAULT_MAX_MESSAGE,
        read_line: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.max_message = max_message
        self._read_line = read_line
        self._buffer = bytearray()
        self._pos = 0  # how far the current value has been scanned
        self._depth = 0
        self._in_string = False
        self._failed: RemoteProtocolError | None = None

    @property
    def idle(self) -> bool:
        """Whether no part of a message is held (the next bytes start a new one)."""
        return not self._buffer and self._failed is None

    def _fail(self, message: str) -> RemoteProtocolError:
        self._failed = RemoteProtocolError(message)
        return self._failed

    def feed(self, data: bytes) -> list[Any]:
        """The messages `data` completes: parsed objects (dicts), or what `read_line` made."""
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        out: list[Any] = []
        newline = b"\n" in data
        while True:
            if self._pos and newline and self._read_line is not None:
                # a message scanned in part may end on a line now: read it as a line (the
                # scan would find the same end: the line's object is complete)
                line = self._line()
                if line is not None:
                    self._pos = self._depth = 0
                    self._in_string = False
                    out.append(line)
                    continue
            if self._pos == 0:
                start = 0
                while start < len(self._buffer) and self._buffer[start] in _WHITESPACE:
                    start += 1
                del self._buffer[:start]
                if not self._buffer:
                    return out
                if self._buffer[0] != ord("{"):
                    raise self._fail("expected a JSON object")
                line = self._line()
                if line is not None:
                    out.append(line)
                    continue
            end = self._scan()
            if end is None:
                if len(self._buffer) > self.max_message:
                    raise self._fail(f"message longer than {self.max_message} bytes")
                return out
            if end > self.max_message:
                raise self._fail(f"message longer than {self.max_message} bytes")
            raw = bytes(self._buffer[:end])
            del self._buffer[:end]
            self._pos = 0
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                raise self._fail("malformed JSON") from None
            if not isinstance(value, dict):
                raise self._fail("expected a JSON object")
            out.append(value)

    def _line(self) -> Any:
        """The object at the buffer's start when it fills the first line (as Go's json.Encoder
        and our provider write every message: one line each), parsed without scanning it
        here; None when it does not (pretty-printed, several on one line, incomplete), and
        `_scan` decides. Only taken when the line is within the size limit and has at most
        64 brackets (so it cannot nest deeper than `_scan` allows)."""
        buf = self._buffer
        end = buf.find(b"\n")
        if end < 0 or end > self.max_message:
            return None
        if self._read_line is not None:
            value = self._read_line(bytes(buf[:end]))
            if value is not None:
                del buf[: end + 1]
                return value
        if buf.count(b"{", 0, end) + buf.count(b"[", 0, end) > 64:
            return None
        try:
            value = json.loads(buf[:end])
        except (ValueError, RecursionError):
            return None
        del buf[: end + 1]  # an object: the buffer starts with "{"
        return value

    def _scan(self) -> int | None:
        """The end offset of the object at the buffer's start, or None if it is incomplete."""
        buf = self._buffer
        pos = self._pos
        while pos < len(buf):
            if self._in_string:
                match = _IN_STRING.search(buf, pos)
                if match is None:
                    pos = len(buf)
                    break
                if match.group() == b"\\":
                    if match.end() >= len(buf):
                        pos = match.start()
                        break
                    pos = match.end() + 1
                    continue
                self._in_string = False
                pos = match.end()
                continue
            match = _STRUCTURE.search(buf, pos)
            if match is None:
                pos = len(buf)
                break
            token = match.group()
            pos = match.end()
            if token == b'"':
                self._in_string = True
            elif token in (b"{", b"["):
                self._depth += 1
                if self._depth > 64:
                    raise self._fail("JSON nested too deeply")
            else:
                self._depth -= 1
                if self._depth < 0:
                    raise self._fail("malformed JSON")
                if self._depth == 0:
                    self._pos = 0
                    return pos
        self._pos = pos
        return None
