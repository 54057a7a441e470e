"""mor-workbench's data directory (journals, the default sandbox), portable to every OS."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["HOME_ENV", "workbench_home"]

HOME_ENV = "MOR_WORKBENCH_HOME"


def workbench_home() -> Path:
    """mor-workbench's data directory: $MOR_WORKBENCH_HOME or the user's data dir."""
    explicit = os.environ.get(HOME_ENV)
    return Path(explicit) if explicit else Path(platformdirs.user_data_dir("mor-workbench"))
