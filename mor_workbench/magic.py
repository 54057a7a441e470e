"""IPython magics: `%load_ext mor_workbench`, then `%mor …` for the marketplace and `%%mor MODEL`
to ask a model with the cell as the prompt (see `%mor help`).

The answer streams live into the cell (a display handle updated as text arrives; a terminal
gets the text as it comes), ends rendered in the chosen format with a footer saying what the
call cost, and is kept in `_mor` (or `-o NAME`) and as the cell's value in `Out[n]` (not shown a
second time), so a later `{Out[n]}` finds it. `{name}`, `{In[n]}`, `{Out[n]}` and `{Err[n]}` in
the cell expand, but only when the name is defined: other braces (code, dicts, f-strings) reach
the model untouched, and a history reference (`In`, `Out`, `Err`) that finds nothing is sent as
written with a one-line warning. `-f json` asks for OpenAI's JSON mode; `-f code` asks for code
only (a system instruction) and strips Markdown fences. A reasoning model's thinking shows
folded above the answer (a <details> block in markdown and HTML, a "Reasoning:" paragraph in
plain text) and is kept in the answer's `reasoning`.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display

from mor_workbench.budget import Budget, budget
from mor_workbench.budget import active as active_budget
from mor_workbench.market.tables import short
from mor_workbench.readouts import call_footer
from mor_workbench.session import Session
from mor_workbench.workbench import Workbench, connect

__all__ = ["Answer", "MorMagics", "expand", "load_ipython_extension"]

FORMATS = ("markdown", "code", "html", "text", "json")
NETWORKS = ("sandbox", "base", "base-sepolia", "gateway")
UPDATE_EVERY_S = 0.1  # the fastest a streaming display is redrawn
REASONING_LABEL = "Reasoning:"  # heads a reasoning model's thinking in plain text
HISTORY = ("In", "Out", "Err")  # the notebook's history: a reference that finds nothing warns
# What -f code and -f json add to the request. OpenAI's JSON mode refuses a request whose
# messages do not mention JSON, so the JSON instruction names it.
CODE_ONLY = (
    "Answer with code only: no explanation before or after it and no Markdown fences; "
    "put any remark in a code comment."
)
JSON_ONLY = "Answer with one JSON value only, with no prose and no Markdown fences."
JSON_MODE = {"type": "json_object"}
MOR_DECIMALS = 6  # MOR amounts in %mor tables: to the micro-MOR (exact wei in the *_wei columns)
PRICE_DIGITS = 6  # MOR prices per second are tiny: significant digits, not decimals

HELP = """\
%mor — the Morpheus inference marketplace in this notebook

  %mor connect sandbox|base|base-sepolia|gateway [--rpc URL]... [--dir SANDBOX_DIR]
                              connect (without it, the first use connects to the sandbox);
                              keys come from MOR_PRIVATE_KEY / MOR_API_KEY, never the notebook
  %mor models                 active models (a DataFrame)
  %mor bids MODEL             the model's bids, scored
  %mor providers              active providers
  %mor sessions               this account's sessions on chain
  %mor balance                ETH, MOR, MOR staked and on hold
  %mor quote MODEL [--duration D | --tokens N]
                              what a session would stake, return and hold, per bid, before
                              any money moves (and why a bid is excluded)
  %mor budget [MAX_MOR [--per-call MOR] [--max-sessions N] | off]
                              a budget for every call of this notebook (widgets included):
                              sessions whose stake would cross it are refused, streams that
                              cross it stopped; alone: its ledger, one row per call
  %mor open MODEL [--duration 10m]
                              open a session (returns it; use its id with --session)
  %mor close [ID|all]         close a session opened with %mor open (an id or its prefix),
                              or every open session of this account
  %mor alias [NAME MODEL [OPTIONS...]]
                              name a model with default options, e.g.
                              %mor alias fast llama-3.3-70b --max-tokens 200; alone: list them
  %mor unalias NAME           forget an alias
  %mor reset [MODEL]          forget the --chat conversation with MODEL (or all of them)
  %mor workbench              the Workbench these magics use, for Python code: the one
                              %mor connect or %mor use picked, else the notebook's own
                              (e.g. wb = mor.connect("sandbox")), else their own
  %mor use NAME               use the notebook's Workbench in variable NAME
  %mor help                   this text

%%mor MODEL|ALIAS [options]  — the cell is the prompt
  -f, --format FORMAT         markdown (default), code, html, text or json; code asks for
                              code only and puts it (fences stripped) in a new cell; json
                              asks for JSON mode and shows the parsed value, pretty-printed
  --session ID                ask through a session opened with %mor open (MODEL optional;
                              without it, the latest one %mor open holds for MODEL is used)
  --stream / --no-stream      show the answer as it arrives (default) or once done
  --system TEXT               a system message
  --max-tokens N, --temperature T
  -p, --param KEY=VALUE       any other OpenAI parameter (VALUE read as JSON when it parses)
  --chat                      keep a conversation with the model across cells
  -o, --output NAME           also store the answer in NAME (it is always in _mor)

  In the cell, {name} is the value of a notebook variable, {In[3]} the input of cell 3,
  {Out[3]} its output (a %%mor cell's output is its answer) and {Err[3]} its error; braces
  around anything else stay as written, {{name}} gives a literal {name}, and a history
  reference that finds nothing is sent as written with a warning.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one UsageError line instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see %mor help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"{self.prog}: see %mor help")


def _cell_parser() -> _Parser:
    parser = _Parser(prog="%%mor", add_help=False)
    parser.add_argument("model", nargs="?")
    parser.add_argument("-f", "--format", choices=FORMATS, default="markdown")
    parser.add_argument("--session")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--system")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("--chat", action="store_true")
    parser.add_argument("-o", "--output")
    return parser


def _connect_parser() -> _Parser:
    parser = _Parser(prog="%mor connect", add_help=False)
    parser.add_argument("network", choices=NETWORKS)
    parser.add_argument("--rpc", action="append")
    parser.add_argument("--dir")
    return parser


def _open_parser() -> _Parser:
    parser = _Parser(prog="%mor open", add_help=False)
    parser.add_argument("model")
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--bid")
    return parser


def _quote_parser() -> _Parser:
    parser = _Parser(prog="%mor quote", add_help=False)
    parser.add_argument("model")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--duration")
    size.add_argument("--tokens", type=int)
    return parser


def _budget_parser() -> _Parser:
    parser = _Parser(prog="%mor budget", add_help=False)
    parser.add_argument("max_mor", type=float)
    parser.add_argument("--per-call", type=float)
    parser.add_argument("--max-sessions", type=int)
    return parser


_CELL = _cell_parser()
_QUOTE = _quote_parser()
_BUDGET = _budget_parser()
_CONNECT = _connect_parser()
_OPEN = _open_parser()


class Answer(str):
    """A model's answer: the text itself, with how the call went (`info`: provider, session,
    TTFT, tokens/s, cost…), its `usage`, the `model`, the request's `messages`, a reasoning
    model's thinking as `reasoning` ("" for other models), and for `-f code` / `-f json` the
    extracted code or parsed value as `data`."""

    info: dict[str, Any]
    reasoning: str
    usage: dict[str, int]
    model: str
    messages: list[dict[str, Any]]
    format: str
    data: Any

    def __new__(cls, text: str, **attributes: Any) -> Answer:
        answer = super().__new__(cls, text)
        answer.__dict__.update(attributes)
        return answer


@dataclass
class Alias:
    model: str
    options: list[str] = field(default_factory=list)


# ----- prompt interpolation -----

_FIELD = re.compile(r"\{\{(\w+(?:\[-?\d+\])?)\}\}|\{([A-Za-z_]\w*)(?:\[(-?\d+)\])?\}")
_MISSING = object()


def expand(text: str, namespace: dict[str, Any], unresolved: list[str] | None = None) -> str:
    """`text` with `{name}` and `{name[n]}` replaced by notebook values — only where the name
    is defined (and the index exists); every other brace stays as written, and `{{name}}`
    is a literal `{name}`. References to the notebook's history (`{In[n]}`, `{Out[n]}`,
    `{Err[n]}`) that find nothing stay as written and are appended to `unresolved`."""

    def replace(match: re.Match[str]) -> str:
        if match[1] is not None:
            return "{" + match[1] + "}"
        value = namespace.get(match[2], _MISSING)
        if value is not _MISSING and match[3] is not None:
            try:
                value = value[int(match[3])]
            except (LookupError, TypeError, ValueError):
                value = _MISSING
        if value is _MISSING:
            if unresolved is not None and match[2] in HISTORY and match[3] is not None:
                unresolved.append(match[0])
            return match[0]
        if isinstance(value, BaseException):
            return _describe_error(value)
        return str(value)

    return _FIELD.sub(replace, text)


def _describe_error(error: BaseException) -> str:
    """An error as Python prints it, without IPython's own frames."""
    described = traceback.TracebackException.from_exception(error)
    internal = os.sep + "IPython" + os.sep
    frames = [f for f in described.stack if internal not in f.filename]
    described.stack = traceback.StackSummary.from_list(frames)
    return "".join(described.format()).rstrip()


# ----- rendering -----

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\n```|\Z)", re.DOTALL)


def extract_code(text: str) -> tuple[str, str]:
    """(code, language) from an answer: the fenced blocks' contents when it has any (joined),
    else the whole text."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text.strip(), "python"
    return "\n\n".join(code.rstrip() for _, code in blocks), blocks[0][0] or "python"


def _fenced(code: str, language: str) -> str:
    ticks = "````" if "```" in code else "```"
    return f"{ticks}{language}\n{code}\n{ticks}"


def parse_json(text: str) -> Any:
    """The JSON value in an answer (bare, or in a fenced block); ValueError if none."""
    try:
        return json.loads(text)
    except ValueError:
        code, _ = extract_code(text)
        return json.loads(code)


def bundle(
    text: str, fmt: str, *, final: bool, waiting: str = "", reasoning: str = ""
) -> dict[str, str]:
    """The MIME bundle that shows `text` in format `fmt` (while streaming, or `final`), with
    a reasoning model's thinking folded above it (unfolded while it is all there is)."""
    shown = _answer_bundle(text, fmt, final=final, waiting=waiting)
    if not reasoning:
        return shown
    unfolded = " open" if not text and not final else ""
    folded = {
        "text/markdown": (
            f"<details{unfolded}><summary>Reasoning</summary>\n\n"
            f"{html.escape(reasoning.strip())}\n\n</details>\n\n"
        ),
        "text/html": (
            f"<details{unfolded}><summary>Reasoning</summary>"
            f'<div style="white-space: pre-wrap">{html.escape(reasoning.strip())}</div>'
            "</details>"
        ),
        "text/plain": f"{REASONING_LABEL}\n{reasoning.strip()}\n\n",
    }
    return {mime: folded[mime] + value for mime, value in shown.items()}


def _answer_bundle(text: str, fmt: str, *, final: bool, waiting: str) -> dict[str, str]:
    if not text and not final:
        return {"text/markdown": f"*{waiting}*", "text/plain": waiting}
    if fmt == "html":
        return {"text/html": text, "text/plain": text}
    if fmt == "text":
        return {"text/plain": text}
    if fmt == "code":
        code, language = extract_code(text) if final else (text, "")
        return {"text/markdown": _fenced(code, language), "text/plain": code}
    if fmt == "json":
        shown = text
        if final:
            with contextlib.suppress(ValueError):
                shown = json.dumps(parse_json(text), indent=2, ensure_ascii=False)
        return {"text/markdown": _fenced(shown, "json"), "text/plain": shown}
    return {"text/markdown": text, "text/plain": text}


def _footer_bundle(line: str) -> dict[str, str]:
    html = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"text/html": f"<small><i>{html}</i></small>", "text/plain": line}


# ----- the magics -----


@magics_class
class MorMagics(Magics):
    """`%mor` (the marketplace) and `%%mor` (ask a model); the workbench is `self.workbench`."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.workbench: Workbench | None = None  # the one in use (see `wb`)
        self._chosen = False  # picked by %mor connect or %mor use, not found or connected
        self._connected_here: Workbench | None = None  # connected by the magics: theirs to close
        self.sessions: dict[str, Session] = {}  # opened by %mor open, by id
        self.aliases: dict[str, Alias] = {}
        self.conversations: dict[str, list[dict[str, Any]]] = {}  # --chat history, by model
        self.last_request: dict[str, Any] | None = None  # the body of the last %%mor call
        self.live_display: bool | None = None  # None: display handles in a kernel, else stdout

    # --- entry point ---
    @no_var_expand
    @line_cell_magic
    def mor(self, line: str, cell: str | None = None) -> Any:
        """The Morpheus marketplace: `%mor help` says everything."""
        # a MorError shows as one line (MorError._render_traceback_); the cell still fails,
        # so notebooks fail in CI
        if cell is None:
            return self._command(line)
        return self._ask(line, cell)

    @property
    def wb(self) -> Workbench:
        """The workbench the magics use: the one `%mor connect` or `%mor use` picked; else the
        notebook's own (a `Workbench` in its namespace, e.g. `wb = mor.connect("sandbox")`),
        so the notebook and the magics share sessions and stake; else one connected to the
        sandbox on first use."""
        if self.workbench is not None and self.workbench.aio._closed:
            self._chosen = False  # closed by its owner: look again
            self._switch(None)
        if not self._chosen:
            found = self._notebook_workbench()
            if found is not None and found[1] is not self.workbench:
                self._switch(found[1])
                print(f"%mor uses the notebook's workbench {found[0]} ({found[1]!r})")
        if self.workbench is None:
            self._connect("sandbox", None, None)
        assert self.workbench is not None
        return self.workbench

    def _notebook_workbench(self) -> tuple[str, Workbench] | None:
        """The notebook's open `Workbench` and its name: the one named `wb` first, else the
        only one; several others are a UsageError asking which."""
        found: dict[int, tuple[str, Workbench]] = {}
        for name, value in self.shell.user_ns.items():
            if name.startswith("_") or not isinstance(value, Workbench) or value.aio._closed:
                continue
            if name == "wb":
                return name, value
            found.setdefault(id(value), (name, value))
        if len(found) > 1:
            names = ", ".join(name for name, _ in found.values())
            raise UsageError(
                f"%mor: the notebook has several workbenches ({names}): pick one with %mor use NAME"
            )
        return next(iter(found.values()), None)

    def _switch(self, workbench: Workbench | None) -> None:
        """Use `workbench` from now on; sessions opened with %mor open are forgotten, and a
        workbench the magics connected themselves is closed (its sessions settle)."""
        previous, self.workbench = self.workbench, workbench
        if previous is workbench:
            return
        self.sessions.clear()
        if previous is not None and previous is self._connected_here:
            self._connected_here = None
            previous.close()

    def _connect(self, network: str, rpc: list[str] | None, directory: str | None) -> None:
        options: dict[str, Any] = {}
        if directory is not None:
            if network != "sandbox":
                raise UsageError("%mor connect: --dir is for the sandbox only")
            options["sandbox_dir"] = directory
        if rpc:
            if network == "sandbox":
                raise UsageError("%mor connect: --rpc is for base, base-sepolia or gateway")
            options["rpc_url"] = rpc[0] if len(rpc) == 1 else rpc
        workbench = connect(network, **options)
        self._switch(workbench)
        self._connected_here = workbench
        who = workbench.address or "read-only"
        print(f"connected to {network} as {who}")

    # --- line commands ---
    def _command(self, line: str) -> Any:
        tokens = _split(line)
        if not tokens:
            print(HELP)
            return None
        command, rest = tokens[0], tokens[1:]
        handler = getattr(self, f"_cmd_{command.replace('-', '_')}", None)
        if handler is None:
            hint = " (to ask a model, use the %%mor cell magic)" if command in self.aliases else ""
            raise UsageError(
                f"%mor: unknown command {command!r}: use one of {', '.join(_COMMANDS)}{hint}"
            )
        return handler(rest)

    def _cmd_help(self, rest: list[str]) -> None:
        print(HELP)

    def _cmd_connect(self, rest: list[str]) -> None:
        args = _CONNECT.parse_args(rest)
        self._connect(args.network, args.rpc, args.dir)
        self._chosen = True

    def _cmd_use(self, rest: list[str]) -> None:
        if len(rest) != 1:
            raise UsageError("%mor use: name one workbench variable, e.g. %mor use wb")
        workbench = self.shell.user_ns.get(rest[0])
        if not isinstance(workbench, Workbench) or workbench.aio._closed:
            raise UsageError(
                f"%mor use: {rest[0]!r} is not an open Workbench (make one with mor.connect)"
            )
        self._switch(workbench)
        self._chosen = True

    def _cmd_workbench(self, rest: list[str]) -> Workbench:
        _no_arguments("workbench", rest)
        return self.wb

    def _cmd_models(self, rest: list[str]) -> pd.DataFrame:
        _no_arguments("models", rest)
        return self.wb.models()

    def _cmd_bids(self, rest: list[str]) -> pd.DataFrame:
        if len(rest) != 1:
            raise UsageError("%mor bids: name one model, e.g. %mor bids llama-3.3-70b")
        return self.wb.bids(rest[0])

    def _cmd_providers(self, rest: list[str]) -> pd.DataFrame:
        _no_arguments("providers", rest)
        return self.wb.providers()

    def _cmd_sessions(self, rest: list[str]) -> pd.DataFrame:
        _no_arguments("sessions", rest)
        return readable_mor(
            self.wb.sessions(),
            amounts=["stake", "provider_withdrawn"],
            prices=["price_per_second"],
        )

    def _cmd_balance(self, rest: list[str]) -> pd.DataFrame:
        _no_arguments("balance", rest)
        frame = pd.DataFrame([dict(self.wb.balance())], index=[self.wb.address])
        return readable_mor(frame, amounts=list(frame.columns))

    def _cmd_quote(self, rest: list[str]) -> pd.DataFrame:
        args = _QUOTE.parse_args(rest)
        model = self.aliases[args.model].model if args.model in self.aliases else args.model
        options = {k: v for k, v in (("duration", args.duration), ("tokens", args.tokens)) if v}
        return readable_mor(
            self.wb.quote(model, **options),
            amounts=["stake", "returned_at_close", "held_at_close", "session_cost"],
            prices=["price_per_second", "mor_per_1k_tokens"],
        )

    def _cmd_budget(self, rest: list[str]) -> pd.DataFrame | None:
        current = active_budget()
        if rest == ["off"]:
            if current is not None:
                current.deactivate()
            print("no notebook budget")
            return None
        if not rest:
            if current is None:
                print("no notebook budget: set one with %mor budget 5")
                return None
            print(repr(current))
            return current.report()
        args = _BUDGET.parse_args(rest)
        chosen: Budget = budget(args.max_mor, args.per_call, args.max_sessions).activate()
        print(f"notebook budget: {chosen!r}")
        return None

    def _cmd_open(self, rest: list[str]) -> Session:
        args = _OPEN.parse_args(rest)
        model = self.aliases[args.model].model if args.model in self.aliases else args.model
        options: dict[str, Any] = {"duration": args.duration}
        if args.bid:
            options["bid"] = args.bid
        session = self.wb.open_session(model, **options)
        self.sessions[session.id] = session
        info = session.info()
        print(
            f"session {session.id} with {short(info['provider'])} until "
            f"{info['ends_at']:%H:%M:%S} UTC: ask with %%mor --session {session.id[:10]}"
        )
        return session

    def _cmd_close(self, rest: list[str]) -> None:
        if len(rest) > 1:
            raise UsageError("%mor close: give one session id, or all")
        if rest == ["all"]:
            closed = self.wb.close_all()
            self.sessions.clear()
            print(f"closed {closed} session{'' if closed == 1 else 's'}")
            return
        if not rest:
            open_ = [s for s in self.sessions.values() if not s.closed]
            if len(open_) != 1:
                which = ", ".join(s.id[:10] for s in open_) or "none is open"
                raise UsageError(f"%mor close: say which session ({which}) or all")
            session = open_[0]
        else:
            session = self._session(rest[0])
        session.close()
        self.sessions.pop(session.id, None)
        print(f"closed session {session.id}")

    def _cmd_alias(self, rest: list[str]) -> pd.DataFrame | None:
        if not rest:
            rows = [
                {"alias": name, "model": a.model, "options": shlex.join(a.options)}
                for name, a in self.aliases.items()
            ]
            return pd.DataFrame(rows, columns=["alias", "model", "options"])
        if len(rest) < 2:
            raise UsageError(
                "%mor alias: give a name and a model, e.g. %mor alias fast llama-3.3-70b"
            )
        name, model, options = rest[0], rest[1], rest[2:]
        if not re.fullmatch(r"[\w.-]+", name):
            raise UsageError(f"%mor alias: {name!r} is not a usable name (letters, digits, ._-)")
        if model in self.aliases:  # an alias of an alias: its options come first
            model, options = self.aliases[model].model, [*self.aliases[model].options, *options]
        _CELL.parse_args([model, *options])  # report bad options now, not at first use
        self.aliases[name] = Alias(model, list(options))
        return None

    def _cmd_unalias(self, rest: list[str]) -> None:
        if len(rest) != 1 or rest[0] not in self.aliases:
            known = ", ".join(self.aliases) or "none"
            raise UsageError(f"%mor unalias: name one alias (defined: {known})")
        del self.aliases[rest[0]]

    def _cmd_reset(self, rest: list[str]) -> None:
        if len(rest) > 1:
            raise UsageError("%mor reset: name one model, or none for every conversation")
        if rest:
            model = self.aliases[rest[0]].model if rest[0] in self.aliases else rest[0]
            self.conversations.pop(model, None)
        else:
            self.conversations.clear()

    def _session(self, wanted: str) -> Session:
        """A session opened with %mor open, by its id, a prefix, or its short form 0x12…abcd."""
        head, _, tail = wanted.lower().partition("…")
        found = [s for i, s in self.sessions.items() if i.startswith(head) and i.endswith(tail)]
        if len(found) == 1:
            return found[0]
        known = ", ".join(i[:10] for i in self.sessions) or "none"
        if found:
            raise UsageError(f"session {wanted!r} is ambiguous: give more of its id ({known})")
        raise UsageError(
            f"no session {wanted!r} was opened with %mor open (open: {known}); "
            "%mor open MODEL opens one"
        )

    def _opened_for(self, model: str) -> Session | None:
        """The latest session opened with %mor open for `model` that is still open."""
        open_ = [s for s in self.sessions.values() if s.aio.model == model and not s.closed]
        return open_[-1] if open_ else None

    # --- %%mor ---
    def _ask(self, line: str, cell: str) -> None:
        tokens = _split(line)
        if tokens and tokens[0] in self.aliases:
            alias = self.aliases[tokens[0]]
            tokens = [alias.model, *alias.options, *tokens[1:]]
        args = _CELL.parse_args(tokens)
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"%%mor: -o {args.output!r} is not a variable name")
        session = self._session(args.session) if args.session else None
        model = args.model
        if session is not None:
            model = session.aio.model if model is None else model
            if model != session.aio.model:
                raise UsageError(
                    f"%%mor: session {session.id[:10]} is for {session.aio.model}, not {model}"
                )
        if model is None:
            raise UsageError("%%mor: name a model, e.g. %%mor llama-3.3-70b (see %mor models)")
        unresolved: list[str] = []
        prompt = expand(cell, self.shell.user_ns, unresolved).strip()
        if not prompt:
            raise UsageError(f"%%mor: the cell is empty: write the prompt under %%mor {model}")
        if unresolved:
            print(
                f"%%mor: {', '.join(unresolved)} found nothing in this notebook's history "
                "(no such cell, output or error): sent as written",
                file=sys.stderr,
            )
        workbench = self.wb
        if session is None:  # the session %mor open holds for this model, not a second one
            session = self._opened_for(model)
        params = _params(args)
        instruction = args.system
        if args.format == "code":
            instruction = "\n\n".join(filter(None, [args.system, CODE_ONLY]))
        elif args.format == "json":
            instruction = "\n\n".join(filter(None, [args.system, JSON_ONLY]))
            params.setdefault("response_format", JSON_MODE)  # -p response_format=… wins
        history = self.conversations.get(model, []) if args.chat else []
        user = {"role": "user", "content": prompt}
        messages = [*history, user]
        system = [{"role": "system", "content": instruction}] if instruction else []
        self.last_request = {"model": model, "messages": [*system, *messages], **params}
        if session is not None:
            stream = session.stream(messages, system=instruction, **params)
        else:
            stream = workbench.stream(messages, model=model, system=instruction, **params)
        stream.record.surface = "%%mor"
        text = self._show(stream, model, args)
        if args.chat:
            self.conversations[model] = [*messages, {"role": "assistant", "content": text}]
        data: Any = None
        if args.format == "code":
            data, _ = extract_code(text)
            self.shell.set_next_input(data, replace=False)
        elif args.format == "json":
            try:
                data = parse_json(text)
            except ValueError as error:
                print(f"the answer is not valid JSON: {error}", file=sys.stderr)
        answer = Answer(
            text,
            reasoning=stream.reasoning,
            info=stream.info,
            usage=stream.usage,
            model=model,
            messages=self.last_request["messages"],
            format=args.format,
            data=data,
        )
        self.shell.user_ns["_mor"] = answer
        if args.output:
            self.shell.user_ns[args.output] = answer
        # The cell's value is its answer: kept in Out (as a displayed value would be, for
        # {Out[n]}) but not displayed again, since it was shown as it streamed.
        number = self._cell_number()
        if number is not None:
            self.shell.user_ns.setdefault("Out", {})[number] = answer

    def _cell_number(self) -> int | None:
        """The number of the cell running now, as IPython's display hook files its value
        under Out; None when it is not numbered (run without storing history)."""
        hook = getattr(self.shell, "displayhook", None)
        running = getattr(hook, "exec_result", None)
        number = getattr(hook, "prompt_count", None)
        if running is None or running.execution_count != number:
            return None
        return number

    def _show(self, stream: Any, model: str, args: argparse.Namespace) -> str:
        """Show the answer (a reasoning model's thinking above it) as it arrives and once
        done, then the footer; the text."""
        live = self.live_display
        if live is None:
            live = getattr(self.shell, "kernel", None) is not None
        waiting = f"asking {model}…"
        if not live:  # a terminal: the thinking and the text as they come, then the footer
            previous = None
            for part in stream.events():
                if not args.stream:
                    continue
                if part.kind == "reasoning" and previous is None:
                    sys.stdout.write(REASONING_LABEL + "\n")
                elif part.kind == "text" and previous == "reasoning":
                    sys.stdout.write("\n\n")
                previous = part.kind
                sys.stdout.write(part.text)
                sys.stdout.flush()
            text = stream.text
            if not args.stream:
                final = bundle(text, args.format, final=True, reasoning=stream.reasoning)
                sys.stdout.write(final["text/plain"])
            print()
            print(call_footer(stream.info, stream.usage, model=model))
            return text

        def shown(final: bool) -> dict[str, str]:
            return bundle(
                stream.text, args.format, final=final, waiting=waiting, reasoning=stream.reasoning
            )

        handle = display(shown(False), raw=True, display_id=True)
        drawn = time.monotonic()
        try:
            for _ in stream.events():
                if args.stream and time.monotonic() - drawn >= UPDATE_EVERY_S:
                    handle.update(shown(False), raw=True)
                    drawn = time.monotonic()
        except BaseException:  # keep what came (an interrupt, a failure) and say nothing more
            handle.update(shown(True), raw=True)
            raise
        handle.update(shown(True), raw=True)
        display(_footer_bundle(call_footer(stream.info, stream.usage, model=model)), raw=True)
        return stream.text


_COMMANDS = [name[5:] for name in dir(MorMagics) if name.startswith("_cmd_")]


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as error:
        raise UsageError(f"%mor: {error} (check the quotes)") from None


def _no_arguments(command: str, rest: list[str]) -> None:
    if rest:
        raise UsageError(f"%mor {command} takes no arguments (got {shlex.join(rest)})")


def readable_mor(
    frame: pd.DataFrame, *, amounts: Sequence[str], prices: Sequence[str] = ()
) -> pd.DataFrame:
    """A copy of `frame` whose MOR `amounts` are rounded to MOR_DECIMALS places and MOR
    `prices` (per second, far below a micro-MOR) to PRICE_DIGITS significant digits, so
    tables show no float noise; exact values stay in the integer `*_wei` columns."""
    shown = frame.copy()
    for column in amounts:
        if column in shown and pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].round(MOR_DECIMALS)
    for column in prices:
        if column in shown and pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda x: float(f"{x:.{PRICE_DIGITS}g}"))
    return shown


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The OpenAI parameters of a %%mor line."""
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    for item in args.param:
        key, equals, raw = item.partition("=")
        if not equals or not key.isidentifier():
            raise UsageError(f"%%mor: --param {item!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def load_ipython_extension(ipython: Any) -> None:
    """Register `%mor` / `%%mor`, and keep each failed cell's error in `Err` for `{Err[n]}`."""
    ipython.register_magics(MorMagics(ipython))
    ipython.user_ns.setdefault("Err", {})

    def record_error(result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is not None and result.execution_count:
            ipython.user_ns.setdefault("Err", {})[result.execution_count] = error

    ipython.events.register("post_run_cell", record_error)
