"""Child process for the soak test: a LangChain program that builds a `ChatMorpheus` per call
(without `workbench=`, as agents commonly do) and then exits normally.

python tests/soak_client.py SANDBOX_DIR CALLS MODEL [MODEL ...]

Prints one JSON line: the calls made and the most sessions of this process open on chain at
once (read from the chain after each call). The sessions it opened must close at exit.
"""

from __future__ import annotations

import asyncio
import json
import sys

from soak_ledger import ledger, session_count

from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.langchain import ChatMorpheus


async def _open_since(info: sandbox.SandboxInfo, user: str, since: int | None) -> tuple[int, int]:
    """(the consumer's session count, how many sessions from index `since` are open)."""
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        if since is None:
            return await session_count(chain, user), 0
        book = await ledger(chain, user, since)
        return since, len(book.open_sessions())
    finally:
        await chain.rpc.aclose()


def main(directory: str, calls: int, models: list[str]) -> None:
    info = sandbox.status(directory)
    assert info is not None, f"no sandbox running in {directory}"
    user = info.signer("consumer").address
    since, _ = asyncio.run(_open_since(info, user, None))
    most_open = 0
    for i in range(calls):
        llm = ChatMorpheus(model=models[i % len(models)], sandbox_dir=directory, max_tokens=12)
        answer = llm.invoke(f"Call {i}: what is a soak test?")
        assert answer.content, f"call {i} got an empty answer"
        _, now_open = asyncio.run(_open_since(info, user, since))
        most_open = max(most_open, now_open)
    print(json.dumps({"calls": calls, "most_open": most_open}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
