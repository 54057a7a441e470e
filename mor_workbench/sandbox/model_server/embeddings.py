"""Embeddings requests: refuse what OpenAI refuses, then compute deterministic vectors.

A vector is a hashed bag of words: each lower-cased word token of the text adds +1 or -1 (by
a hash of the word) at `HASH_SLOTS` positions of a `dim`-long vector (by the same hash), and
the sum is L2-normalised. Texts sharing words point the same way, so cosine similarity ranks a
paraphrase above an unrelated text, which is what retrieval tests need; no weights, no GPU.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import numpy as np

from mor_workbench.sandbox.model_server.request import Invalid
from mor_workbench.sandbox.model_server.text import count_tokens

__all__ = [
    "DEFAULT_DIM",
    "embedding_vector",
    "embeddings_response",
    "is_embedding_model",
    "validate_embeddings",
]

DEFAULT_DIM = 1024  # bge-m3's dimension
HASH_SLOTS = 4  # positions each word touches: fewer collisions between unrelated words
MAX_INPUTS = 2048  # OpenAI's limit of inputs in one request
_WORD = re.compile(r"\w+")
_EMBEDDING_NAME = re.compile(r"embed|bge|e5-|minilm|nomic", re.IGNORECASE)


def is_embedding_model(name: str) -> bool:
    """Whether a model of this name embeds rather than chats (text-embedding-bge-m3, ...)."""
    return bool(_EMBEDDING_NAME.search(name))


def validate_embeddings(body: Any) -> None:
    """Raise `Invalid` for an embeddings body OpenAI would refuse (whether the model exists,
    or embeds at all, is the server's business)."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str):
        raise Invalid("You must provide a model parameter.", "model")
    given = body.get("input")
    if given is None:
        raise Invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise Invalid(
            "Invalid 'input': expected a string or an array of strings (this simulated server "
            "does not take token arrays).",
            "input",
            "invalid_type",
        )
    if not texts or any(t == "" for t in texts):
        raise Invalid("Invalid 'input': it must not be empty nor hold an empty string.", "input")
    if len(texts) > MAX_INPUTS:
        raise Invalid(
            f"Invalid 'input': array too long. Expected at most {MAX_INPUTS} inputs, but got "
            f"{len(texts)}.",
            "input",
            "array_above_max_length",
        )
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise Invalid(
            f"Invalid 'encoding_format': {fmt!r}: expected 'float' or 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    dims = body.get("dimensions")
    if dims is not None and (
        not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= DEFAULT_DIM
    ):
        raise Invalid(
            f"Invalid 'dimensions': expected an integer from 1 to {DEFAULT_DIM}.",
            "dimensions",
            "invalid_value",
        )


def embedding_vector(text: str, dim: int = DEFAULT_DIM) -> np.ndarray:
    """The unit float32 vector of `text` (see the module doc); a text without words gets the
    vector of its own characters, so it is never zero."""
    vector = np.zeros(dim, dtype=np.float64)
    words = _WORD.findall(text.lower()) or [text]
    for word in words:
        digest = hashlib.blake2b(word.encode(), digest_size=4 * HASH_SLOTS).digest()
        for slot in range(HASH_SLOTS):
            value = int.from_bytes(digest[4 * slot : 4 * slot + 4], "big")
            vector[value % dim] += 1.0 if value & 0x80000000 else -1.0
    norm = np.linalg.norm(vector)
    if norm == 0:  # every word cancelled out: fall back on one fixed axis
        vector[0] = 1.0
        norm = 1.0
    return (vector / norm).astype(np.float32)


def embeddings_response(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A validated request's answer in OpenAI's `CreateEmbeddingResponse` shape, and its
    prompt tokens (the simulator's tokenizer, `count_tokens`)."""
    given = body["input"]
    texts = [given] if isinstance(given, str) else given
    dim = body.get("dimensions") or DEFAULT_DIM
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector = embedding_vector(text, dim)
        encoded: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if as_base64
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(t) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": body["model"], "usage": usage}, tokens
