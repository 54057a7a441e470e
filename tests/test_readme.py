"""README.md runs as written, in order (issue 13).

Every code block of the README is one test, named by its line (`README.md:50`):

- ```` ```python ```` and ```` ```ipython ```` (the `%mor` magics) blocks run as cells of one
  IPython shell, in order, sharing its namespace as a notebook would, with MOR_WORKBENCH_HOME
  pointing at this test's own directory, so `mor.connect("sandbox")` starts a sandbox of its
  own there (stopped at the end);
- indented blocks are shell commands, run line by line from the repository root: `make X` as
  `make -n X` (running it would reinstall the shared environment, and `make test` would run
  this file again), `mor-workbench serve` as a server (on a free port instead of the one
  written, answering `GET /v1/models`, then stopped with SIGTERM), other `.venv/bin/…` commands
  as they are;
- a block (or a command line) with a `# needs …` comment needs what this machine lacks (the
  live network, a key, a browser, a model server) and is skipped with that reason;
- ```` ```text ```` blocks are pictures, not code.

A block that fails fails its test with the block's line number.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell
from markdown_it import MarkdownIt

from mor_workbench import sandbox

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NEEDS = re.compile(r"#\s*(needs\b.*)$", re.MULTILINE)
CELL_LANGUAGES = {"python", "ipython"}
SERVER_READY_S = 120.0  # how long `serve` may take to answer its first request
COMMAND_LIMIT_S = 300.0


@dataclass(frozen=True)
class Block:
    """One code block of the README: its kind ("cell", "shell" or "text"), source and line."""

    kind: str
    source: str
    line: int  # 1-based, the block's first line of code

    @property
    def needs(self) -> str | None:
        """What the block needs that a test machine lacks (its `# needs …` comment), if any."""
        found = NEEDS.search(self.source)
        return found.group(1) if found else None


def readme_blocks() -> list[Block]:
    """The README's code blocks, in order."""
    blocks = []
    for token in MarkdownIt("commonmark").parse(README.read_text(encoding="utf-8")):
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        language = token.info.strip().split(" ")[0]
        if token.type == "code_block":
            kind, first = "shell", token.map[0] + 1
        elif language in CELL_LANGUAGES:
            kind, first = "cell", token.map[0] + 2  # after the opening fence
        elif language == "text":
            kind, first = "text", token.map[0] + 2
        else:
            raise AssertionError(
                f"README.md:{token.map[0] + 1}: a fenced block needs a language the README test "
                f"knows ({', '.join(sorted(CELL_LANGUAGES))} or text), not {language!r}"
            )
        blocks.append(Block(kind, token.content, first))
    return blocks


BLOCKS = readme_blocks()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Reader:
    """The README read in order: one IPython shell for the cells, one home for the sandbox."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.done: set[int] = set()  # indices of the blocks already run
        InteractiveShell.clear_instance()  # a fresh notebook, not another test's shell
        self.shell = InteractiveShell.instance()
        self.env = {**os.environ, "MOR_WORKBENCH_HOME": str(home), "PYTHONPATH": str(ROOT)}

    def run_through(self, index: int) -> None:
        """Run every block up to `index`, each once, in order (a block relies on those above)."""
        for earlier, block in enumerate(BLOCKS[: index + 1]):
            if earlier in self.done:
                continue
            self.done.add(earlier)
            if block.kind == "text" or (block.kind == "cell" and block.needs is not None):
                continue
            if block.kind == "cell":
                self.run_cell(block)
            else:
                for offset, line in enumerate(block.source.splitlines()):
                    command = line.strip()
                    if command and not command.startswith("#") and NEEDS.search(line) is None:
                        self.run_command(line, block.line + offset)

    def run_cell(self, block: Block) -> None:
        result = self.shell.run_cell(block.source, store_history=True)
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            pytest.fail(f"README.md:{block.line}: {type(error).__name__}: {error}", pytrace=False)

    def run_command(self, line: str, number: int) -> None:
        argv = shlex.split(line, comments=True)
        where = f"README.md:{number}: {line.strip()}"
        if argv[0] == "make":  # a dry run, outside any make that runs this test
            self.check(["make", "-n", *argv[1:]], where, drop=("MAKEFLAGS", "MFLAGS", "MAKELEVEL"))
        elif argv[:2] == [".venv/bin/mor-workbench", "serve"]:
            self.serve(argv, where)
        elif argv[0].startswith(".venv/bin/"):
            self.check(argv, where)
        else:
            pytest.fail(
                f"{where}: the README test does not know how to run this; "
                "teach tests/test_readme.py, or mark it `# needs …`",
                pytrace=False,
            )

    def check(self, argv: list[str], where: str, drop: tuple[str, ...] = ()) -> None:
        """Run a command to its end; it must exit 0. `drop` names variables to unset for it."""
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env={name: value for name, value in self.env.items() if name not in drop},
            capture_output=True,
            text=True,
            timeout=COMMAND_LIMIT_S,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"{where}: exit status {done.returncode}: {done.stderr.strip()[-2000:]}",
                pytrace=False,
            )

    def serve(self, argv: list[str], where: str) -> None:
        """Run `serve` as written but on a free port, ask it for its models, stop it."""
        port = free_port()
        argv = list(argv)
        argv[argv.index("--port") + 1] = str(port)
        server = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            models = self.wait_for_models(server, f"http://127.0.0.1:{port}/v1/models")
            if models is None:
                server.kill()
                pytest.fail(
                    f"{where}: never answered: {server.communicate()[0][-2000:]}", pytrace=False
                )
            assert "llama-3.3-70b" in {m["id"] for m in models["data"]}, where
            server.send_signal(signal.SIGTERM)
            output = server.communicate(timeout=COMMAND_LIMIT_S)[0]
            assert server.returncode == 0, f"{where}: SIGTERM gave {server.returncode}: {output}"
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()

    @staticmethod
    def wait_for_models(server: subprocess.Popen[str], url: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + SERVER_READY_S
        while time.monotonic() < deadline and server.poll() is None:
            try:
                return httpx.get(url, timeout=10).raise_for_status().json()
            except httpx.TransportError:
                time.sleep(0.5)
        return None

    def close(self) -> None:
        workbench = self.shell.user_ns.get("wb")
        if workbench is not None:
            workbench.close()
        InteractiveShell.clear_instance()
        sandbox.reset(self.home / "sandbox")


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    home = tmp_path_factory.mktemp("readme-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(home))
        reading = Reader(home)
        try:
            yield reading
        finally:
            reading.close()


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs_as_written(reader: Reader, index: int) -> None:
    block = BLOCKS[index]
    if block.kind == "cell" and block.needs is not None:
        pytest.skip(f"README.md:{block.line} {block.needs}")
    lines = [line for line in block.source.splitlines() if line.strip()]
    if block.kind == "shell" and all(NEEDS.search(line) for line in lines):
        pytest.skip(f"README.md:{block.line} {block.needs}")
    if block.kind == "text":
        pytest.skip(f"README.md:{block.line} is a picture, not code")
    reader.run_through(index)


def test_the_readmes_blocks_are_all_found() -> None:
    """The parametrization above covers the README: Python, magic and shell blocks alike."""
    kinds = [b.kind for b in BLOCKS]
    assert kinds.count("cell") >= 8 and kinds.count("shell") >= 5
    assert any(b.source.startswith("%%mor") for b in BLOCKS)
