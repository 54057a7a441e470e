"""Chat completion requests: refuse what OpenAI refuses, then decide the whole answer up front."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mor_workbench.sandbox.model_server.schema import Literals, schema_value
from mor_workbench.sandbox.model_server.text import Draws, count_tokens, paragraph, split_tokens

__all__ = ["Invalid", "Plan", "error_body", "is_reasoning_model", "plan", "validate"]


def error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error JSON, which every OpenAI client turns into its exception classes."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Invalid(Exception):
    """A request OpenAI would refuse with 400, in its words."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, "invalid_request_error", self.param, self.code)


_NUMBER = (int, float)
_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "a string"),
    "messages": (list, "an array"),
    "stream": (bool, "a boolean"),
    "stream_options": (dict, "an object"),
    "max_tokens": (int, "an integer"),
    "max_completion_tokens": (int, "an integer"),
    "n": (int, "an integer"),
    "seed": (int, "an integer"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "stop": ((str, list), "a string or an array"),
    "tools": (list, "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "response_format": (dict, "an object"),
}
_RANGES: dict[str, tuple[float, float]] = {
    "max_tokens": (1, float("inf")),
    "max_completion_tokens": (1, float("inf")),
    "n": (1, 128),
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def validate(body: Any) -> None:
    """Raise `Invalid` for a body OpenAI would refuse (whether the model exists is the server's
    business: that is a 404)."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.")
    for name, (kind, words) in _TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise Invalid(
                f"Invalid type for '{name}': expected {words}, but got "
                f"{type(value).__name__} instead.",
                name,
                "invalid_type",
            )
        low, high = _RANGES.get(name, (-float("inf"), float("inf")))
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not low <= value <= high
        ):
            raise Invalid(
                f"Invalid '{name}': {value} is out of range: expected a value from {low:g} "
                f"to {high:g}.",
                name,
                "invalid_value",
            )
    if body.get("model") is None:
        raise Invalid("You must provide a model parameter.", "model")
    messages = body.get("messages")
    if messages is None:
        raise Invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not messages:
        raise Invalid(
            "Invalid 'messages': empty array. Expected a non-empty array (minimum length 1), "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise Invalid(
                f"Invalid 'messages[{i}]': expected an object whose role is one of "
                f"{', '.join(_ROLES)}.",
                f"messages[{i}]",
                "invalid_value",
            )
    if body.get("n", 1) not in (None, 1):
        raise Invalid(
            f"This simulated server returns one choice per request: 'n' must be 1, not "
            f"{body['n']}.",
            "n",
            "unsupported_value",
        )
    if body.get("stream_options") is not None and not body.get("stream"):
        raise Invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    stop = body.get("stop")
    if isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise Invalid("Invalid 'stop': expected an array of strings.", "stop", "invalid_type")
        if len(stop) > 4:
            raise Invalid(
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
                f"but got an array with length {len(stop)} instead.",
                "stop",
                "array_above_max_length",
            )
    _validate_tools(body.get("tools"), body.get("tool_choice"))
    _validate_response_format(body.get("response_format"))


def _validate_tools(tools: list[Any] | None, choice: str | dict[str, Any] | None) -> None:
    for i, tool in enumerate(tools or ()):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(fn, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("parameters") or {}, dict)
        ):
            raise Invalid(
                f'Invalid \'tools[{i}]\': expected {{"type": "function", "function": '
                '{"name": ..., "parameters": {...}}}.',
                f"tools[{i}]",
                "invalid_value",
            )
    if choice is None:
        return
    if not tools:
        raise Invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise Invalid(
                f"Invalid value for 'tool_choice': {choice!r}. Supported values are: 'none', "
                "'auto' and 'required', or a function.",
                "tool_choice",
                "invalid_value",
            )
        return
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise Invalid(
            "Missing required parameter: 'tool_choice.function.name'.",
            "tool_choice.function.name",
            "missing_required_parameter",
        )
    if all(t["function"]["name"] != name for t in tools):
        raise Invalid(
            f"Invalid value for 'tool_choice': function {name!r} is not among the tools.",
            "tool_choice",
            "invalid_value",
        )


def _validate_response_format(fmt: dict[str, Any] | None) -> None:
    if fmt is None:
        return
    if fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise Invalid(
            f"Invalid value for 'response_format.type': {fmt.get('type')!r}. Supported values "
            "are: 'text', 'json_object' and 'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    spec = fmt.get("json_schema")
    if fmt["type"] == "json_schema" and not (
        isinstance(spec, dict) and isinstance(spec.get("schema", {}), dict | bool)
    ):
        raise Invalid(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )


# Names of open reasoning models as providers list them: DeepSeek-R1 and its distills, QwQ,
# OpenAI's gpt-oss (sold on the live network as gpt-oss-120b), and anything that says it
# reasons or thinks.
_REASONING_NAME = re.compile(
    r"(?:^|[-_/.:])(?:r1|qwq|gpt-oss)(?:$|[-_/.:])|reason|think", re.IGNORECASE
)


def is_reasoning_model(name: str) -> bool:
    """Whether a model of this name thinks before it answers (gpt-oss-120b, qwq-32b, ...)."""
    return bool(_REASONING_NAME.search(name))


@dataclass
class Plan:
    """The whole answer, decided before any of it is sent."""

    content: str | None
    tool_call: dict[str, Any] | None  # {"id", "type", "function": {"name", "arguments"}}
    pieces: list[str]  # what is streamed, a token each: content, or the call's arguments
    finish_reason: str  # "stop", "length" or "tool_calls"
    usage: dict[str, Any]
    reasoning: str | None = None  # a reasoning model's thinking (None for other models)
    reasoning_pieces: list[str] = field(default_factory=list)  # streamed before `pieces`

    @property
    def tokens(self) -> int:
        """Every generated token: the reasoning's and the answer's."""
        return len(self.reasoning_pieces) + len(self.pieces)


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content array."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def prompt_text(body: dict[str, Any]) -> str:
    """What prompt tokens are counted over: each message's role, name, text and tool calls, and
    the tool definitions, as a chat template would render them."""
    lines = []
    for message in body["messages"]:
        lines.append(f"{message['role']} {message.get('name') or ''}")
        lines.append(text_of(message.get("content")))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                lines.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    if body.get("tools"):
        lines.append(json.dumps(body["tools"], sort_keys=True))
    return "\n".join(lines)


def _tool_result_reply(messages: list[dict[str, Any]], draws: Draws) -> str:
    """Text that answers a tool result by quoting it, so a demo or test can see it came back."""
    last = messages[-1]
    result = " ".join(text_of(last.get("content")).split())
    if len(result) > 200:
        result = result[:197] + "..."
    name = last.get("name")
    for message in messages[:-1]:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and call.get("id") == last.get("tool_call_id"):
                name = (call.get("function") or {}).get("name", name)
    source = f"The {name} tool" if name else "The tool"
    return f"{source} returned {result}. {paragraph(draws, 1 + draws.below(2))}"


def _reasoning(key: str, messages: list[dict[str, Any]]) -> str:
    """What a reasoning model thinks before it answers: a nod to the question, then prose
    drawn from its own key, so the answer itself is the same as a plain model's."""
    draws = Draws((key + ":reasoning").encode())
    asked = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    topic = " ".join(text_of(asked.get("content")).split()[:8]) or "this"
    return f"Let me think about {topic!r}. {paragraph(draws, 2 + draws.below(2))}"


def plan(body: dict[str, Any], *, reasoning: bool = False) -> Plan:
    """Decide a validated request's answer: deterministic in (model, messages, seed).

    A tool call when tools are offered and tool_choice allows one (after a tool result, "auto"
    answers in text); else JSON for a JSON response_format, else prose. Tool arguments and
    JSON take the last user message's numbers and quoted strings where they fit, and JSON
    mode uses the keys that message quotes, as a model following the prompt would. A
    trailing assistant message is a prefix to continue (as llama.cpp and Ollama treat it):
    the answer is the rest of what the model would have said. Then the earliest stop
    sequence cuts the text and max_tokens cuts the tokens (finish_reason "length").

    A `reasoning` model first thinks (`Plan.reasoning`, sent as `reasoning_content` as
    DeepSeek's and vLLM's servers do), except when it continues a prefix: its thinking was
    done. As on those servers, max_tokens counts the thinking too, and usage reports it as
    `completion_tokens_details.reasoning_tokens` within `completion_tokens`; unlike them, the
    simulator keeps its thinking within half of max_tokens, so a small budget still gets an
    answer (a live model may think through the whole budget and answer nothing).
    """
    messages: list[dict[str, Any]] = body["messages"]
    prefix = ""
    last = messages[-1]
    if len(messages) > 1 and last.get("role") == "assistant" and not last.get("tool_calls"):
        prefix, messages = text_of(last.get("content")), messages[:-1]
    key = json.dumps([body["model"], messages, body.get("seed")], sort_keys=True)
    draws = Draws(key.encode())
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or "auto"
    after_tool = messages[-1].get("role") in ("tool", "function")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    asked = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    literals = Literals(text_of(asked.get("content")))
    finish = "stop"
    content: str | None = None
    tool_call: dict[str, Any] | None = None
    thinking: str | None = None
    thought: list[str] = []
    if reasoning and not prefix:
        thought = split_tokens(_reasoning(key, messages))
        if limit is not None:  # the thinking takes at most half the budget
            thought = thought[: limit // 2]
            limit -= len(thought)
        thinking = "".join(thought)
    if tools and choice != "none" and not (after_tool and choice == "auto"):
        named = choice["function"]["name"] if isinstance(choice, dict) else None
        fn = next((t for t in tools if t["function"]["name"] == named), tools[0])["function"]
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        arguments = schema_value(schema, key, literals)
        pieces = split_tokens(json.dumps(arguments, ensure_ascii=False))
        finish = "tool_calls"
        if limit is not None and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"  # cut-off arguments, as OpenAI sends them
        tool_call = {
            "id": "call_" + draws.hex(24),
            "type": "function",
            "function": {"name": fn["name"], "arguments": "".join(pieces)},
        }
    else:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            value = schema_value(fmt["json_schema"].get("schema", {}), key, literals)
            text = json.dumps(value, ensure_ascii=False)
        elif fmt.get("type") == "json_object":
            names = literals.names()
            if names:
                text = json.dumps({n: paragraph(draws, 1) for n in names}, ensure_ascii=False)
            else:
                confidence = draws.below(101) / 100
                text = json.dumps({"answer": paragraph(draws, 1), "confidence": confidence})
        elif after_tool:
            text = _tool_result_reply(messages, draws)
        else:
            text = paragraph(draws, 2 + draws.below(4))
        if prefix:
            text = text[len(prefix) :] if text.startswith(prefix) else " " + paragraph(draws, 1)
        stop = body.get("stop")
        cuts = [text.find(s) for s in ([stop] if isinstance(stop, str) else stop or ()) if s]
        if any(c >= 0 for c in cuts):
            text = text[: min(c for c in cuts if c >= 0)]
        pieces = split_tokens(text)
        if limit is not None and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"
        content = "".join(pieces)
    prompt_tokens = count_tokens(prompt_text(body))
    completion_tokens = len(thought) + len(pieces)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if thinking is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(thought)}
    return Plan(content, tool_call, pieces, finish, usage, thinking, thought)
