"""Deterministic text: the simulator's tokenizer, hash-driven draws and English-ish prose."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Draws", "count_tokens", "paragraph", "phrase", "split_tokens"]

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per word and one per punctuation mark."""
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    """`text` cut into its tokens, each with the whitespace before it; they join back to `text`."""
    pieces = _TOKEN.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest:  # trailing whitespace rides on the last piece
        if pieces:
            pieces[-1] += text[-rest:]
        else:
            pieces = [text]
    return pieces


class Draws:
    """Deterministic integers from SHAKE-256 of a key: stable across Python versions and
    platforms (unlike `random`'s helpers), so tests can pin exact outputs."""

    def __init__(self, key: bytes) -> None:
        self._hash = hashlib.shake_256(key)
        self._bytes = self._hash.digest(256)
        self._at = 0

    def below(self, n: int) -> int:
        """An integer in [0, n) (0 when n <= 0)."""
        if self._at + 4 > len(self._bytes):
            self._bytes = self._hash.digest(2 * len(self._bytes))  # same prefix, longer
        value = int.from_bytes(self._bytes[self._at : self._at + 4], "big")
        self._at += 4
        return value % n if n > 0 else 0

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.below(len(options))]

    def hex(self, n: int) -> str:
        return "".join("0123456789abcdef"[self.below(16)] for _ in range(n))


_DETS = ("the", "each", "every", "this", "that")
_ADJS = (
    "quiet", "fast", "patient", "honest", "distant", "careful", "bright", "steady", "small",
    "curious", "open", "local", "signed", "fair", "busy", "gentle", "early", "clever",
)  # fmt: skip
NOUNS = (
    "provider", "model", "router", "session", "market", "prompt", "token", "node", "receipt",
    "ledger", "network", "answer", "stream", "notebook", "question", "signal", "river",
    "garden", "engine", "bridge", "library", "morning", "lantern", "harbor",
)  # fmt: skip
_VERBS = (
    "answers", "carries", "measures", "signs", "follows", "finds", "shapes", "reads",
    "settles", "routes", "writes", "checks", "remembers", "builds", "greets", "watches",
)  # fmt: skip
_PREPS = ("across", "beyond", "within", "beside", "under", "over", "through", "near")
_ADVS = ("quickly", "softly", "gladly", "slowly", "clearly", "often", "rarely", "calmly")
_CONJS = ("and", "while", "because", "so", "but")


def phrase(draws: Draws) -> list[str]:
    """A noun phrase: "the steady router"."""
    words = [draws.pick(_DETS)]
    if draws.below(2):
        words.append(draws.pick(_ADJS))
    words.append(draws.pick(NOUNS))
    return words


def _clause(draws: Draws) -> list[str]:
    words = phrase(draws)
    if draws.below(4) == 0:
        words.append(draws.pick(_ADVS))
    words.append(draws.pick(_VERBS))
    words += phrase(draws)
    if draws.below(2):
        words += [draws.pick(_PREPS), *phrase(draws)]
    return words


def _sentence(draws: Draws) -> str:
    words = _clause(draws)
    if draws.below(3) == 0:
        words[-1] += ","
        words += [draws.pick(_CONJS), *_clause(draws)]
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def paragraph(draws: Draws, sentences: int) -> str:
    """`sentences` grammatical, meaningless sentences."""
    return " ".join(_sentence(draws) for _ in range(sentences))
