"""A restarted sandbox keeps its ports, and a connected workbench carries on through restarts.

Real daemons on an isolated directory; the same workbench object is used throughout.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import RpcUnavailable, SandboxError

MODEL = "llama-3.3-70b"


@contextlib.contextmanager
def occupied(*ports: int) -> Iterator[None]:
    """Another program listens on `ports` meanwhile."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            holder = stack.enter_context(socket.socket())
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
            holder.bind(("127.0.0.1", port))
            holder.listen()
        yield


def endpoints(wb: mor.Workbench) -> dict[str, str]:
    return dict(zip(wb.providers()["address"], wb.providers()["endpoint"], strict=True))


def test_restarts_keep_the_ports_and_the_same_workbench_carries_on(tmp_path: Path) -> None:
    first = sandbox.start(tmp_path)
    wb = mor.connect("sandbox", sandbox_dir=tmp_path)
    try:
        models = wb.models()
        registered = endpoints(wb)
        assert wb.chat("Hello", model=MODEL)

        assert sandbox.stop(tmp_path)
        second = sandbox.start(tmp_path)
        assert second.rpc_url == first.rpc_url
        assert endpoints(wb) == registered
        pd.testing.assert_frame_equal(wb.models(), models)
        assert wb.chat("Hello again", model=MODEL)

        # While it was down, other programs took the chain's port and one provider's: it
        # comes back elsewhere, that provider re-registers, and the workbench follows.
        assert sandbox.stop(tmp_path)
        moved_provider, endpoint = next(iter(registered.items()))
        with occupied(urlsplit(first.rpc_url).port, int(endpoint.rsplit(":", 1)[1])):
            third = sandbox.start(tmp_path)
        assert third.rpc_url != first.rpc_url
        pd.testing.assert_frame_equal(wb.models(), models)
        now = endpoints(wb)
        assert now[moved_provider] != endpoint
        assert {a: e for a, e in now.items() if a != moved_provider} == {
            a: e for a, e in registered.items() if a != moved_provider
        }
        assert wb.chat("And once more", model=MODEL)

        # Down: the error says so and names the command that starts it.
        assert sandbox.stop(tmp_path)
        with pytest.raises(SandboxError, match=r"not running.*mor-workbench sandbox start --dir"):
            wb.models()
        sandbox.start(tmp_path)
        assert wb.chat("Back", model=MODEL)
    finally:
        with contextlib.suppress(mor.MorError):
            wb.close()
        sandbox.reset(tmp_path)


def test_a_reset_sandbox_asks_to_connect_again(tmp_path: Path) -> None:
    sandbox.start(tmp_path)
    wb = mor.connect("sandbox", sandbox_dir=tmp_path)
    try:
        sandbox.reset(tmp_path)
        sandbox.start(tmp_path)
        with pytest.raises(SandboxError, match=r"was reset.*connect again"):
            wb.models()
    finally:
        wb.close()
        sandbox.reset(tmp_path)


async def test_rpc_client_asks_refresh_urls_only_when_every_url_fails(anvil) -> None:
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers there
    asked: list[str] = []

    async def moved() -> list[str]:
        asked.append("refresh")
        return [anvil.url]

    rpc = RpcClient(anvil.url, refresh_urls=moved)
    try:
        assert int(await rpc.request("eth_chainId"), 16) == anvil.chain_id
        assert asked == []
        rpc.urls = [dead]
        assert int(await rpc.request("eth_chainId"), 16) == anvil.chain_id
        assert asked == ["refresh"] and rpc.urls == [anvil.url]
    finally:
        await rpc.aclose()

    async def down() -> list[str]:
        raise SandboxError("the sandbox is not running: `mor-workbench sandbox start`")

    rpc = RpcClient(dead, refresh_urls=down)
    try:
        with pytest.raises(SandboxError, match="mor-workbench sandbox start"):
            await rpc.request("eth_chainId")
    finally:
        await rpc.aclose()
    rpc = RpcClient(dead)
    try:
        with pytest.raises(RpcUnavailable, match="check the URL"):
            await rpc.request("eth_chainId")
    finally:
        await rpc.aclose()
