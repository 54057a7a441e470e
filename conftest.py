"""The whole test run (notebooks included) keeps its sandboxes and journals in a home of its
own, never the user's; the default sandbox started there is removed at the end."""

from __future__ import annotations

import os
import tempfile

import pytest

from mor_workbench.sandbox.paths import HOME_ENV

_created: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(HOME_ENV):
        os.environ[HOME_ENV] = tempfile.mkdtemp(prefix="mor-workbench-tests-")
        _created.append(os.environ[HOME_ENV])


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created and os.environ.get(HOME_ENV) == _created[0]:
        from mor_workbench import sandbox

        sandbox.reset()
