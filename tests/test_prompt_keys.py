"""A session's prompts go ECIES-encrypted under one ephemeral key of the session (issue 16 §3:
the provider derives the keys once a session, not once a prompt; each box is still a
go-ethereum box), a new key for each session, and the router lets go of it when the session
closes. Through the sandbox's real provider on a socket; the router's transport records the
bytes it sends."""

from __future__ import annotations

import json

import mor_workbench as mor
from mor_workbench.protocol.ecies import PUB_LEN
from mor_workbench.router.transport import TCP, PeerConnection

MODEL = "llama-3.3-70b"


class Recording:
    """The TCP transport, keeping every request's bytes."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def connect(self, endpoint: str) -> PeerConnection:
        connection = await TCP.connect(endpoint)
        sent = self.sent

        class Recorded:
            async def send(self, data: bytes) -> None:
                sent.append(data)
                await connection.send(data)

            async def receive(self) -> bytes:
                return await connection.receive()

            def close(self) -> None:
                connection.close()

        return Recorded()

    def prompts(self) -> list[dict]:
        """The params of each session.prompt sent, in order."""
        return [
            request["params"]
            for request in map(json.loads, self.sent)
            if request["method"] == "session.prompt"
        ]

    def prompt_keys(self) -> list[bytes]:
        """The ephemeral key of each encrypted prompt sent, in order."""
        return [bytes.fromhex(p["message"][2:])[:PUB_LEN] for p in self.prompts()]


def test_a_sessions_prompts_share_one_key_and_each_session_has_its_own(
    wb: mor.Workbench,
) -> None:
    router = wb.aio.router
    recording = Recording()
    router.transport = recording
    keys = []
    for _ in range(2):
        session = wb.open_session(MODEL, duration="5m")
        for question in ("one", "two", "three"):
            assert session.chat(question)  # the provider opened each prompt
        session.close()
        keys.append(recording.prompt_keys())
        recording.sent.clear()
        assert router._prompt_boxes == {}  # let go of at close
    first, second = keys
    assert len(first) == len(second) == 3
    assert len(set(first)) == 1 and len(set(second)) == 1
    assert first[0] != second[0]


def test_each_prompt_offers_a_fast_channel_key_of_its_own_made_ahead(wb: mor.Workbench) -> None:
    """The fast channel's X25519 key of a prompt is made after the last prompt's first chunk
    (off the time to first token), and still used for one prompt only."""
    router = wb.aio.router
    recording = Recording()
    router.transport = recording
    session = wb.open_session(MODEL, duration="5m")
    for question in ("one", "two", "three"):
        assert session.chat(question)
        assert set(router._offers) == {session.aio.opened.session_id}  # the next one, ready
    offered = [p["fastChannel"] for p in recording.prompts()]
    assert len(offered) == 3 and len(set(offered)) == 3
    session.close()
    assert router._offers == {}
