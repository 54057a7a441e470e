"""Run anvil (Foundry's local EVM node) as a child process that dies with its parent.

With a `state` file, one chain at most runs on it: the chain holds an exclusive lock beside the
state for its whole life and leaves its pid beside it, so a later start can stop a leftover
chain (whose parent was killed) instead of running a second one that overwrites its state.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from mor_workbench.errors import ConfigurationError, SandboxError

__all__ = ["Anvil", "find_anvil", "stop_leftover"]

ANVIL_ENV = "MOR_ANVIL"
INSTALL_HINT = (
    "install Foundry's anvil: `npm install @foundry-rs/anvil` in your project "
    "(or `make setup` in a mor-workbench checkout), or set MOR_ANVIL=/path/to/anvil"
)
_LISTENING = re.compile(rb"Listening on ([0-9.]+):(\d+)")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# npm's @foundry-rs/anvil installs a node wrapper as .bin/anvil and the real binary in a
# per-platform package (see its const.mjs); we run the binary itself, so that signals, the
# parent-death signal and the state lock reach the chain and not a wrapper.
_NPM_ARCH = {"x86_64": "amd64", "amd64": "amd64", "arm64": "arm64", "aarch64": "arm64"}


def _npm_binary(node_modules: Path) -> Path | None:
    arch = _NPM_ARCH.get(platform.machine().lower())
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    if arch is None or system is None:
        return None
    binary = node_modules / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    return binary if os.access(binary, os.X_OK) else None


def find_anvil() -> str:
    """The anvil binary: $MOR_ANVIL, a node_modules install near here or the package (its
    platform binary rather than npm's node wrapper), else PATH."""
    explicit = os.environ.get(ANVIL_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigurationError(
                f"{ANVIL_ENV}={explicit!r} is not an executable; {INSTALL_HINT}"
            )
        return explicit
    here = Path(__file__).resolve()
    for root in (Path.cwd(), *Path.cwd().parents, *here.parents):
        node_modules = root / "node_modules"
        wrapper = node_modules / ".bin" / "anvil"
        if os.access(wrapper, os.X_OK):
            return str(_npm_binary(node_modules) or wrapper)
    found = shutil.which("anvil")
    if found:
        return found
    raise ConfigurationError(f"anvil was not found; {INSTALL_HINT}")


def _lock_path(state: Path) -> Path:
    return state.with_name(state.name + ".lock")


def _pid_path(state: Path) -> Path:
    return state.with_name(state.name + ".pid")


def _runs_on(pid: int, state: Path) -> bool:
    """Whether `pid` is alive and (where /proc shows it) a process started on `state`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process is not our chain
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return sys.platform != "linux"  # no /proc to ask: trust the pidfile and the held lock
    except OSError:
        return False
    return b"--state" in argv and str(state).encode() in argv


def _free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (with SO_REUSEADDR, as anvil)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def stop_leftover(state: Path, timeout: float = 15.0) -> bool:
    """Stop a chain still running on `state` after its parent died (SIGTERM, so it saves the
    state first; SIGKILL after `timeout` s) and wait until it let go of the state. Returns
    whether there was one; raises `SandboxError` when the state is held by a process that is
    not a chain on it (its pid is not in the pidfile beside the state)."""
    _lock_path(state).parent.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(state), "a") as handle:
        if _try_lock(handle):
            return False
        try:
            pid = int(_pid_path(state).read_text())
        except (FileNotFoundError, ValueError):
            pid = 0
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not (pid and _runs_on(pid, state)):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _runs_on(pid, state):
                time.sleep(0.05)
            if _try_lock(handle):
                return True
        raise SandboxError(
            f"the chain state {state} is in use by another process: stop it first "
            "(two chains on one state file would overwrite each other)"
        )


def _die_with(parent: int, libc: ctypes.CDLL | None) -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux), as anvil saves its state
    on SIGTERM; exit at once if the parent already died."""
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


class Anvil:
    """An anvil child process on `port` if it is free (else, or with 0, a free one); `state`
    persists the chain to a file across restarts, one chain per file at a time.

    The child gets SIGTERM when the thread that started it exits (Linux's parent-death
    signal): start it from a thread that lives as long as the chain should.
    """

    def __init__(
        self,
        *,
        state: Path | None = None,
        chain_id: int = 31337,
        log: Path | None = None,
        port: int = 0,
    ) -> None:
        self.state = state
        self.chain_id = chain_id
        self.log = log
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._lock: IO[str] | None = None

    @property
    def lock_path(self) -> Path | None:
        """The file whose exclusive lock the chain on `state` holds while it runs."""
        return _lock_path(self.state) if self.state is not None else None

    def start(self, timeout: float = 15.0) -> str:
        """Start anvil and return its RPC URL once it listens. With a state file, a leftover
        chain on it is stopped first; `SandboxError` if the state stays in use."""
        if self.state is not None:
            stop_leftover(self.state)  # first: it may hold our port
        port = self.port if self.port and _free(self.port) else 0
        args = [
            find_anvil(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            "1",
            "--code-size-limit",
            "24576",
        ]
        kept: tuple[int, ...] = ()
        if self.state is not None:
            # held for the chain's life, so not a `with` block
            self._lock = open(_lock_path(self.state), "a")  # noqa: SIM115
            if not _try_lock(self._lock):
                self._release()
                raise SandboxError(
                    f"the chain state {self.state} is in use by another process: stop it first"
                )
            kept = (self._lock.fileno(),)  # the chain holds the lock too, even if we die
            args += ["--state", str(self.state), "--state-interval", "5"]
        libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
        parent = os.getpid()
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=kept,
            preexec_fn=lambda: _die_with(parent, libc),
        )
        if self.state is not None:
            _pid_path(self.state).write_text(str(self.process.pid))
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
                self.port = int(match[2])
                self._drain()
                return self.url
        self.stop()
        tail = seen.decode(errors="replace").strip().splitlines()[-3:]
        raise SandboxError(f"anvil did not start: {' | '.join(tail) or 'no output'}")

    def _drain(self) -> None:
        """Keep reading anvil's output (into the log) so its pipe never fills and blocks it."""

        def pump(stream: IO[bytes], sink: Path | None) -> None:
            with open(sink, "ab") if sink else open(os.devnull, "wb") as out:
                for line in iter(stream.readline, b""):
                    out.write(line)
                    out.flush()

        assert self.process is not None
        threading.Thread(target=pump, args=(self.process.stdout, self.log), daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate anvil (it writes its state file on the way out) and free the state."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._release()

    def _release(self) -> None:
        if self.state is not None and self.process is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                if int(_pid_path(self.state).read_text()) == self.process.pid:
                    _pid_path(self.state).unlink()
        if self._lock is not None:
            self._lock.close()  # the lock goes with the last holder: the chain has exited
            self._lock = None

    def __enter__(self) -> Anvil:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
