"""Secrets never leak (issue 10 §5): a recognisable private key, an RPC URL with credentials, a
path and an API key in its query, and a keystore password, driven through every surface and
error path at DEBUG logging; every captured log, output, error, serialization and pickle is
searched for them. The RPC URL reaches the sandbox's real chain through a forwarder that
answers only when the credentials, path and key are all there, so they were really used."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import pickle
import re
import sqlite3
import stat
import threading
import traceback
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from eth_account import Account
from IPython.core.interactiveshell import InteractiveShell
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd, dumps

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench._portal import portal
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import load_signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.langchain import ChatMorpheus
from mor_workbench.router.journal import SessionJournal
from mor_workbench.serve import make_app
from mor_workbench.workbench import AsyncWorkbench, Workbench

KEY = "0x" + "5ec2e7ab" * 8  # any 8 hex digits of it, in any case, give it away
PASSWORD = "pa55word"
URL_PATH = "secret-path"
QUERY_KEY = "SEKRET"
KEYSTORE_PASSWORD = "k3ystore-PASS"
SERVE_KEY = "sk-serve-SECRET-key"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
SECRETS = re.compile(
    "|".join(
        re.escape(s)
        for s in ("5ec2e7ab", PASSWORD, URL_PATH, QUERY_KEY, KEYSTORE_PASSWORD, SERVE_KEY, BASIC)
    ),
    re.IGNORECASE,
)
KEY_BYTES = bytes.fromhex(KEY[2:])
MODEL = "llama-3.3-70b"
MOR = 10**18


def assert_nothing_leaked(captured: dict[str, str | bytes]) -> None:
    """No secret in any captured text (nor the key's raw bytes in a binary one)."""
    for where, text in captured.items():
        if isinstance(text, bytes):
            assert KEY_BYTES not in text, f"the private key's bytes are in {where}"
            text = text.decode("latin-1")
        found = SECRETS.search(text)
        assert found is None, f"{found.group(0)!r} leaked in {where}: …{_around(text, found)}…"


def _around(text: str, found: re.Match[str]) -> str:
    return text[max(0, found.start() - 80) : found.end() + 80]


def failure(call: Any) -> str:
    """The error `call` raises, as a user sees it: message and traceback."""
    try:
        call()
    except Exception as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError("expected an error")


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    """Every log record of every logger at DEBUG, formatted with tracebacks — a notebook's
    `logging.basicConfig(level=logging.DEBUG)` — restored afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


class Forwarder(ThreadingHTTPServer):
    """A JSON-RPC endpoint at a secret URL: forwards to `upstream` only the requests that
    carry the URL's credentials, path and query key (403 otherwise)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.forwarded = 0

    @property
    def url(self) -> str:
        return f"http://user:{PASSWORD}@127.0.0.1:{self.server_port}/{URL_PATH}?apikey={QUERY_KEY}"


class _Forward(BaseHTTPRequestHandler):
    server: Forwarder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if (
            self.path != f"/{URL_PATH}?apikey={QUERY_KEY}"
            or self.headers.get("Authorization") != f"Basic {BASIC}"
        ):
            self.send_error(403)
            return
        request = urllib.request.Request(
            self.server.upstream, body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as answer:
            data = answer.read()
        self.server.forwarded += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the forwarder is not under test
        pass


@pytest.fixture(scope="module")
def forwarder(sandbox_info: Any) -> Iterator[Forwarder]:
    server = Forwarder(sandbox_info.rpc_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def funded_key(sandbox_info: Any) -> str:
    """KEY, with ETH for gas and MOR to stake from the sandbox's consumer."""

    async def fund() -> None:
        rpc = RpcClient(sandbox_info.rpc_url)
        chain = Chain(rpc, sandbox_info.deployment)
        address = Account.from_key(KEY).address
        await rpc.request("anvil_setBalance", [address, hex(10**21)])
        consumer = sandbox_info.signer("consumer")
        token = sandbox_info.deployment.token
        await chain.transact(consumer, "transfer", address, 1_000 * MOR, to=token)
        await rpc.aclose()

    asyncio.run(fund())
    return KEY


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))  # this test's journal
    return tmp_path / "home"


def secret_workbench(sandbox_info: Any, forwarder: Forwarder) -> AsyncWorkbench:
    """A workbench paying with KEY whose chain is reached only through the secret URL."""
    chain = Chain(RpcClient(forwarder.url), sandbox_info.deployment)
    return AsyncWorkbench("sandbox", chain, load_signer(KEY))


def test_connecting_shows_no_secret_when_it_fails(
    sandbox_info: Any, forwarder: Forwarder, debug_logs: io.StringIO, capfd: Any
) -> None:
    captured: dict[str, str | bytes] = {
        # the node answers, but for another chain than Base
        "wrong chain": failure(lambda: mor.connect("base", rpc_url=forwarder.url)),
        "no node": failure(
            lambda: mor.connect(
                "base", rpc_url=f"http://user:{PASSWORD}@127.0.0.1:1/{URL_PATH}?apikey={QUERY_KEY}"
            )
        ),
        "bad key": failure(
            lambda: mor.connect("sandbox", sandbox_dir=sandbox_info.directory, key=KEY + "0")
        ),
        "bad keystore": failure(
            lambda: mor.connect(
                "base",
                rpc_url=forwarder.url,
                keystore=str(sandbox_info.directory / "missing.json"),
                password=KEYSTORE_PASSWORD,
            )
        ),
    }
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mor_workbench")
    result = shell.run_cell(f"%mor connect base --rpc {forwarder.url}")
    captured["magic error"] = repr(result.error_in_exec)
    out, err = capfd.readouterr()
    captured |= {"stdout": out, "stderr": err, "logs": debug_logs.getvalue()}
    assert forwarder.forwarded > 0  # the secret URL was used, and its requests were logged
    assert f"JSON-RPC request: POST http://127.0.0.1:{forwarder.server_port}/…" in captured["logs"]
    assert_nothing_leaked(captured)


async def test_chat_revert_and_serve_show_no_secret(
    sandbox_info: Any,
    forwarder: Forwarder,
    funded_key: str,
    home: Path,
    debug_logs: io.StringIO,
    capfd: Any,
) -> None:
    workbench = secret_workbench(sandbox_info, forwarder)
    captured: dict[str, str | bytes] = {"repr": repr(workbench)}
    answer = await workbench.chat("Hello there", model=MODEL, max_tokens=8)
    assert answer
    # a revert: more MOR than the account holds
    try:
        await workbench.chain.transact(
            workbench.account,
            "transfer",
            Account.create().address,
            10**30,
            to=workbench.chain.deployment.token,
        )
    except mor.MorError as exc:
        captured["revert"] = "".join(traceback.format_exception(exc))
    else:
        raise AssertionError("the transfer should have reverted")
    # serve: the openai client against the workbench, its request logs at DEBUG
    runner = web.AppRunner(make_app(workbench, api_key=SERVE_KEY), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        client = openai.AsyncOpenAI(base_url=base_url, api_key=SERVE_KEY, max_retries=0)
        done = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        captured["serve answer"] = done.model_dump_json()
        with pytest.raises(openai.AuthenticationError) as refused:
            await openai.AsyncOpenAI(
                base_url=base_url, api_key=SERVE_KEY + "-wrong", max_retries=0
            ).models.list()
        captured["serve refusal"] = str(refused.value)
        await client.close()
    finally:
        await runner.cleanup()  # closes the workbench and its sessions
    out, err = capfd.readouterr()
    captured |= {"stdout": out, "stderr": err, "logs": debug_logs.getvalue()}
    assert forwarder.forwarded > 0 and "JSON-RPC request: POST" in captured["logs"]
    assert f"{base_url}/chat/completions" in captured["logs"]  # a URL without secrets: as is
    assert_nothing_leaked(captured)


class Recorder(BaseCallbackHandler):
    """Everything LangChain hands to callbacks, as text."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.seen.append(repr((serialized, kwargs)))

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.seen.append(repr(kwargs))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.seen.append(repr((response, kwargs)))

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.seen.append(repr((error, kwargs)))


def serializations(llm: ChatMorpheus) -> dict[str, str | bytes]:
    return {
        "repr": repr(llm),
        "str": str(llm),
        "asdict": repr(llm.asdict()),
        "model_dump": repr(llm.model_dump()),
        "model_dump_json": llm.model_dump_json(),
        "dumpd": repr(dumpd(llm)),
        "dumps": dumps(llm),
        "pickle": pickle.dumps(llm),
        "ls_params": repr(llm._get_ls_params()),
        "invocation_params": repr(llm._get_invocation_params()),
    }


def test_chat_morpheus_shows_no_secret(
    sandbox_info: Any,
    forwarder: Forwarder,
    funded_key: str,
    home: Path,
    debug_logs: io.StringIO,
    capfd: Any,
) -> None:
    recorder = Recorder()
    workbench = Workbench(portal().run(_async(secret_workbench, sandbox_info, forwarder)))
    captured: dict[str, str | bytes] = {}
    try:
        llm = ChatMorpheus(model=MODEL, workbench=workbench, max_tokens=8)
        answer = llm.invoke("Hello", config={"callbacks": [recorder]})
        chunks = list(llm.stream("Hello", config={"callbacks": [recorder]}))
        captured |= {"answer": repr(answer), "chunks": repr(chunks)}
        captured |= {f"given {k}": v for k, v in serializations(llm).items()}
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "mor_workbench")
        shell.user_ns["secret_wb"] = workbench
        for cell in (
            "%mor use secret_wb",
            "%mor workbench",
            "%mor balance",
            f"%%mor {MODEL} --max-tokens 5 --no-stream\nHello",
        ):
            result = shell.run_cell(cell)
            captured[cell] = repr((result.result, result.error_in_exec))
    finally:
        workbench.close()
    settings = ChatMorpheus(
        model=MODEL,
        network="base",
        rpc_url=forwarder.url,
        api_key=KEY,
        connect_options={"password": KEYSTORE_PASSWORD},
    )
    captured |= {f"settings {k}": v for k, v in serializations(settings).items()}
    captured["connect error"] = failure(
        lambda: settings.invoke("Hello", config={"callbacks": [recorder]})
    )
    unpickled = pickle.loads(pickle.dumps(settings))
    refused = failure(lambda: unpickled.invoke("Hello"))
    assert "unpickled" in refused  # it does not connect with another account or node
    captured["unpickled error"] = refused
    out, err = capfd.readouterr()
    captured |= {"callbacks": "\n".join(recorder.seen), "stdout": out, "stderr": err}
    captured["logs"] = debug_logs.getvalue()
    assert len(recorder.seen) >= 4 and "JSON-RPC request: POST" in captured["logs"]
    assert_nothing_leaked(captured)


async def _async(make: Any, *args: Any) -> Any:
    return make(*args)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_about_the_account_are_the_owners_only(sandbox_info: Any, tmp_path: Path) -> None:
    for path in [sandbox_info.directory, *sandbox_info.directory.iterdir()]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    # a sandbox an older version left readable by all is tightened when next used
    old_sandbox = tmp_path / "old-sandbox"
    old_sandbox.mkdir(mode=0o755)
    (old_sandbox / "accounts.json").write_text("{}")
    (old_sandbox / "accounts.json").chmod(0o644)
    assert sandbox.stop(old_sandbox) is False
    assert _mode(old_sandbox) == 0o700 and _mode(old_sandbox / "accounts.json") == 0o600
    # a journal an older version left readable by all is tightened when opened
    folder = tmp_path / "journal"
    folder.mkdir(mode=0o755)
    old = folder / "old.sqlite3"
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
    old.chmod(0o644)
    journal = SessionJournal(old)
    try:
        written = [old, *folder.glob("old.sqlite3-*")]
        assert len(written) == 3  # the database, its -wal and -shm
        assert {p.name: _mode(p) for p in written} == {p.name: 0o600 for p in written}
        assert _mode(folder) == 0o700
        assert _mode(folder / "owners") == 0o700
    finally:
        journal.close()
    fresh = SessionJournal(tmp_path / "new" / "a.sqlite3")
    try:
        assert _mode(tmp_path / "new") == 0o700
        assert _mode(tmp_path / "new" / "a.sqlite3") == 0o600
    finally:
        fresh.close()


def test_a_secret_url_is_hidden_in_any_logger_message_and_traceback(
    forwarder: Forwarder, debug_logs: io.StringIO
) -> None:
    RpcClient(forwarder.url)  # our code was given the URL: from now on it is hidden
    late = logging.getLogger("a.library.created.later")
    late.info("fetching %s (and http://example.org/v1/models)", forwarder.url)
    try:
        raise RuntimeError(f"request to {forwarder.url} failed")
    except RuntimeError:
        late.exception("failed", stack_info=True)
    logs = debug_logs.getvalue()
    assert f"fetching http://127.0.0.1:{forwarder.server_port}/…" in logs
    assert "http://example.org/v1/models" in logs  # other URLs are left alone
    assert "RuntimeError: request to" in logs  # the traceback is still there
    assert_nothing_leaked({"logs": logs})
