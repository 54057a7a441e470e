"""Files that hold anything about a user's account — the session journal, the sandbox's keys,
chain state and logs — readable by their owner only: files 0600 in folders 0700.

They are created so, and tightened when found wider (an older version wrote them 0644 under
the usual umask). Modes are POSIX permissions; on Windows `chmod` only toggles read-only, and
the user's profile folder is what keeps them private.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "private_file", "tighten"]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def tighten(path: Path) -> None:
    """Take away every permission of group and others from `path` (a file or a folder),
    when it has any."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter: created 0700 (missing parents as
    usual), tightened when it exists wider; with every file directly in it tightened too."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    tighten(path)
    for child in path.iterdir():
        if child.is_file():
            tighten(child)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read and write: created empty and 0600 when
    missing (never truncated), tightened when it exists wider."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    tighten(path)
    return path
