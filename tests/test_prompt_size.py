"""`check_prompt_fits` sizes a prompt exactly as `prompt()` sends it encrypted (issue 16 §3:
the size is now computed, not encoded a second time)."""

from __future__ import annotations

import json
import os

import pytest

from mor_workbench.errors import RequestTooLarge
from mor_workbench.protocol import Request, SessionPromptReq, ecies_encrypt, public_key_of, sign
from mor_workbench.router.peer import _now_ms, _request_id, check_prompt_fits

BODIES = [
    {"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "m", "messages": [{"role": "user", "content": 'é"\\\n\t🙂 ' * 300}], "n": 2},
    {"model": "m", "messages": [], "tools": [{"type": "function", "x": list(range(500))}]},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_size_checked_is_the_size_sent(body: dict) -> None:
    provider = public_key_of(os.urandom(32))
    text = json.dumps(body, separators=(",", ":"))
    box = "0x" + ecies_encrypt(provider, text.encode()).hex()
    signed = sign(SessionPromptReq(os.urandom(32), box, _now_ms()), os.urandom(32))
    sent = len(Request(_request_id(), signed).encode())
    check_prompt_fits(body, limit=sent)
    with pytest.raises(RequestTooLarge):
        check_prompt_fits(body, limit=sent - 1)
