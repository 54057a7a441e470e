"""Child process for the crash tests: run the real router and die by SIGKILL at one step.

python tests/crash_router.py SANDBOX_DIR JOURNAL STEP   (STEP: opening | opened | closing)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router import router as router_module
from mor_workbench.router.journal import SessionJournal


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main(directory: str, journal: str, step: str) -> None:
    info = sandbox.status(directory)
    assert info is not None
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    router = router_module.Router(chain, info.signer("consumer"), SessionJournal(Path(journal)))
    if step == "opening":  # journaled, then killed before the open transaction is sent

        async def killed(*args: object, **kwargs: object) -> None:
            die()

        router_module.peer.open_session = killed  # type: ignore[assignment]
    elif step == "opened":  # the open is mined, killed before the journal says so
        transition = router.journal.transition

        def killing_transition(approval_hash: str, event: str, **changes: object):
            if event == "opened":
                die()
            return transition(approval_hash, event, **changes)

        router.journal.transition = killing_transition  # type: ignore[method-assign]
    elif step == "closing":  # killed just before the close transaction is sent
        transact = chain.transact

        async def killing_transact(signer, fn, *args, **kwargs):
            if fn == "closeSession":
                die()
            return await transact(signer, fn, *args, **kwargs)

        chain.transact = killing_transact  # type: ignore[method-assign]
    session = await router.open("llama-3.3-70b", 600)
    await router.close(session)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
