"""Shared fixtures: real anvil nodes and isolated sandboxes that end with the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain.anvil import Anvil


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A bare anvil node (no contracts) for this test."""
    node = Anvil()
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An isolated sandbox shared by the test session, stopped at the end."""
    directory = tmp_path_factory.mktemp("sandbox")
    sandbox.start(directory)
    yield directory
    sandbox.reset(directory)


@pytest.fixture(scope="session")
def sandbox_info(sandbox_dir: Path) -> sandbox.SandboxInfo:
    info = sandbox.status(sandbox_dir)
    assert info is not None
    return info


@pytest.fixture
def wb(sandbox_info, tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    """A workbench on the shared sandbox, with a journal home of this test's own."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    yield workbench
    workbench.close()
