"""A simulated LLM server speaking the OpenAI HTTP API, for the sandbox, tests and benchmarks.

The project's only stand-in for vLLM, llama.cpp, Ollama or OpenAI (no GPU, no weights):
`GET /v1/models[/{id}]`, `POST /v1/embeddings` (deterministic hashed bag-of-words vectors,
float or base64) and `POST /v1/chat/completions`, streamed as SSE or not, with usage,
stop, max_tokens, tool calls and JSON response formats that satisfy their schemas, OpenAI's
error JSON and status codes, deterministic text (a hash of model, messages and seed), and a
per-server latency profile (TTFT, tokens per second, jitter, errors, stalls, dropped
connections) drawn from a seeded RNG. It is tested with the real openai SDK, so provider code
that works against it works against the real servers.

    async with ModelServer(["llama-3.3-70b"], profile="fast") as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")

    python -m mor_workbench.sandbox.model_server --model llama-3.3-70b --profile fast --port 0
"""

from mor_workbench.sandbox.model_server.embeddings import embedding_vector, is_embedding_model
from mor_workbench.sandbox.model_server.profiles import PROFILES, LatencyProfile
from mor_workbench.sandbox.model_server.schema import schema_value
from mor_workbench.sandbox.model_server.server import ModelServer
from mor_workbench.sandbox.model_server.text import count_tokens, split_tokens

__all__ = [
    "PROFILES",
    "LatencyProfile",
    "ModelServer",
    "count_tokens",
    "embedding_vector",
    "is_embedding_model",
    "schema_value",
    "split_tokens",
]
