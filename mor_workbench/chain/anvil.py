"""Run anvil (Foundry's local EVM node) as a child process on a free port."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from mor_workbench.errors import ConfigurationError, SandboxError

__all__ = ["Anvil", "find_anvil"]

ANVIL_ENV = "MOR_ANVIL"
INSTALL_HINT = (
    "install Foundry's anvil: `npm install @foundry-rs/anvil` in your project "
    "(or `make setup` in a mor-workbench checkout), or set MOR_ANVIL=/path/to/anvil"
)
_LISTENING = re.compile(rb"Listening on ([0-9.]+):(\d+)")


def find_anvil() -> str:
    """The anvil binary: $MOR_ANVIL, a node_modules/.bin near here or the package, else PATH."""
    explicit = os.environ.get(ANVIL_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigurationError(
                f"{ANVIL_ENV}={explicit!r} is not an executable; {INSTALL_HINT}"
            )
        return explicit
    here = Path(__file__).resolve()
    for root in (Path.cwd(), *Path.cwd().parents, *here.parents):
        candidate = root / "node_modules" / ".bin" / "anvil"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise ConfigurationError(f"anvil was not found; {INSTALL_HINT}")


class Anvil:
    """An anvil child process; `state` persists the chain to a file across restarts."""

    def __init__(
        self, *, state: Path | None = None, chain_id: int = 31337, log: Path | None = None
    ) -> None:
        self.state = state
        self.chain_id = chain_id
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> str:
        """Start anvil and return its RPC URL once it listens."""
        args = [
            find_anvil(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            "1",
            "--code-size-limit",
            "24576",
        ]
        if self.state is not None:
            args += ["--state", str(self.state), "--state-interval", "5"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen += line
            match = _LISTENING.search(line)
            if match:
                self.url = f"http://{match[1].decode()}:{int(match[2])}"
                self._drain()
                return self.url
        self.stop()
        tail = seen.decode(errors="replace").strip().splitlines()[-3:]
        raise SandboxError(f"anvil did not start: {' | '.join(tail) or 'no output'}")

    def _drain(self) -> None:
        """Keep reading anvil's output (into the log) so its pipe never fills and blocks it."""
        import threading

        def pump(stream, sink: Path | None) -> None:
            with open(sink, "ab") if sink else open(os.devnull, "wb") as out:
                for line in iter(stream.readline, b""):
                    out.write(line)
                    out.flush()

        assert self.process is not None
        threading.Thread(target=pump, args=(self.process.stdout, self.log), daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate anvil (it writes its state file on the way out)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Anvil:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
