"""Chat: a streaming conversation with one model, through a session the widget opens."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from typing import Any

import traitlets

from mor_workbench.errors import one_line
from mor_workbench.market.catalog import CHAT_TYPES
from mor_workbench.market.tables import short
from mor_workbench.readouts import call_footer
from mor_workbench.session import AsyncSession
from mor_workbench.widgets._base import MorWidget, asset, jsonable, records
from mor_workbench.workbench import AsyncWorkbench, Workbench

__all__ = ["Chat"]

UPDATE_EVERY_S = 0.05  # streamed text reaches the browser at most this often
RENEW_BEFORE_S = 20  # a session this close to its end is replaced before the next prompt


class Chat(MorWidget):
    """Chat with `model`: answers stream in, each with a footer saying who answered, how fast
    and at what cost. Pick the model and the provider ("" = the best that accepts); the
    session is opened on the first prompt, renewed when it ends, and shown with a countdown.

    `send(prompt)` and `stop()` are what the Send and Stop buttons call; `messages` is the
    history ({"role", "content", "footer", "info", "streaming"} each; an answer also has
    "reasoning", a reasoning model's thinking, shown in a collapsible block above it and
    never sent back to the model).
    """

    _esm = asset("common.js", "chat.js")
    _css = asset("widgets.css")

    model = traitlets.Unicode("").tag(sync=True)
    bid = traitlets.Unicode("").tag(sync=True)
    model_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    bids = traitlets.List().tag(sync=True)
    messages = traitlets.List().tag(sync=True)
    session = traitlets.Dict().tag(sync=True)
    system = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        wb: Workbench | AsyncWorkbench,
        model: str = "",
        *,
        bid: str = "",
        system: str = "",
        duration: str | int = "10m",
        **params: Any,
    ) -> None:
        super().__init__(wb, model=model, bid=bid, system=system)
        self.duration = duration
        self.params = params  # passed to every request (temperature, max_tokens, …)
        self._session: AsyncSession | None = None
        self._current: concurrent.futures.Future[Any] | None = None
        self.observe(self._on_model, names="model")
        self._follow_sessions(self._on_sessions_changed)
        self._submit(self._load(), "loading models")

    def _on_sessions_changed(self, event: str, session_id: str) -> None:
        """The widget's session was closed elsewhere (the Sessions widget, `%mor close all`,
        housekeeping): stop showing it; the next prompt opens a new one."""
        if event == "closed" and self._session is not None and self._session.id == session_id:
            self._show_session(0.0)

    def _actions(self) -> dict[str, Any]:
        return {
            "send": lambda msg: self.send(str(msg.get("prompt", ""))),
            "stop": lambda _msg: self.stop(),
            "clear": lambda _msg: self.clear(),
            "end_session": lambda _msg: self.end_session(),
        }

    # ----- what the buttons call -----
    def send(self, prompt: str) -> concurrent.futures.Future[Any] | None:
        """Ask `prompt` (with the history so far); returns at once, the answer streams in."""
        prompt = prompt.strip()
        if not prompt:
            return None
        if self._current is not None and not self._current.done():
            self.error = "an answer is still streaming: stop it or wait"
            return None
        self._current = self._submit(self._answer(prompt), "answering", quiet=True)
        return self._current

    def stop(self) -> None:
        """Stop the answer that is streaming (what arrived so far stays)."""
        if self._current is not None and not self._current.done():
            self._cancel(self._current)

    def clear(self) -> None:
        """Forget the history (the session stays open)."""
        self._submit(self._set_messages([]), "clearing", quiet=True)

    def end_session(self) -> None:
        """Close the session now (the unused stake comes back); the next prompt opens one."""
        self._submit(self._end_session(), "closing the session")

    # ----- on the loop -----
    async def _set_messages(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    async def _load(self) -> None:
        models = await self._aio.models()
        chat_models = models[models["type"].isin(CHAT_TYPES)]  # embedding, speech: not here
        self.model_names = list(chat_models["name"])
        if not self.model and self.model_names:
            self.model = self.model_names[0]
        else:
            await self._load_bids()

    async def _load_bids(self) -> None:
        if not self.model:
            self.bids = []
            return
        frame = await self._aio.bids(self.model)
        self.bids = records(frame, ["id", "provider", "provider_short", "price_per_hour", "score"])

    def _on_model(self, _change: Any) -> None:
        with self.hold_trait_notifications():
            self.bid = ""
        self._submit(self._load_bids(), f"loading {self.model}'s providers")

    async def _session_for_prompt(self) -> AsyncSession:
        """The open session if it still fits the model, provider and clock, else a new one
        (the old one is closed in the background so its unused stake comes back)."""
        session, now = self._session, await self._aio.chain_time()
        wanted_bid = self.bid or None
        reusable = (
            session is not None
            and not session.closed
            and session.model == self.model
            and (wanted_bid is None or session.info()["bid_id"] == wanted_bid)
            and session.opened.ends_at - now > RENEW_BEFORE_S
        )
        if reusable:
            return session
        if session is not None and not session.closed:
            self._submit(session.close(), "closing the previous session", quiet=True)
        async with self._step(f"opening a session for {self.model}"):
            session = await self._aio.open_session(
                self.model, duration=self.duration, bid=wanted_bid
            )
        self._session = session
        self._show_session(await self._aio.chain_time())
        return session

    def _show_session(self, chain_now: float) -> None:
        s = self._session
        if s is None or s.closed:
            self.session = {}
            return
        self.session = jsonable(
            {
                "id": s.id,
                "id_short": short(s.id),
                "provider": s.provider,
                "provider_short": short(s.provider),
                "model": s.model,
                "ends_at": s.opened.ends_at,
                "now": chain_now,  # the countdown runs on the chain's clock
                "price_per_hour": s.opened.price_per_second * 3600 / 1e18,
            }
        )

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._show_session(0.0)
        self.status = "session closed" if session is not None else "no session open"

    async def _answer(self, prompt: str) -> None:
        if not self.model:
            raise ValueError("pick a model first")
        history = [
            {"role": m["role"], "content": m["content"]}
            for m in self.messages
            if m["role"] in ("user", "assistant") and m["content"]
        ]
        base = [*self.messages, {"role": "user", "content": prompt, "footer": "", "info": {}}]
        reply: dict[str, Any] = {
            "role": "assistant",
            "content": "",
            "reasoning": "",
            "footer": "",
            "info": {},
            "streaming": True,
        }
        self.messages = [*base, reply]
        stream = None
        try:
            session = await self._session_for_prompt()
            stream = session.stream(
                [*history, {"role": "user", "content": prompt}],
                system=self.system or None,
                **self.params,
            )
            stream.record.surface = "widget"  # as the budget ledger reports it
            async with contextlib.aclosing(stream.events()) as parts:  # Stop ends it too
                async with self._step(f"waiting for {short(session.provider)}"):
                    await anext(parts, None)  # the first token (of thinking or answer)
                last = 0.0
                async for _part in parts:
                    if time.monotonic() - last >= UPDATE_EVERY_S:
                        last = time.monotonic()
                        reply = {**reply, "content": stream.text, "reasoning": stream.reasoning}
                        self.messages = [*base, reply]
            info = jsonable(stream.info)
            reply = {
                **reply,
                "content": stream.text,
                "reasoning": stream.reasoning,
                "footer": call_footer(info),
                "info": info,
                "streaming": False,
            }
            self._show_session(await self._aio.chain_time())  # after a failover
        except asyncio.CancelledError:
            text = stream.text if stream is not None else reply["content"]
            thought = stream.reasoning if stream is not None else reply["reasoning"]
            info = jsonable(stream.info) if stream is not None else {}
            note = call_footer(info) + " | stopped" if info.get("provider") else "stopped"
            reply = {
                **reply,
                "content": text,
                "reasoning": thought,
                "footer": note,
                "info": info,
                "streaming": False,
            }
            self.messages = [*base, reply]
            raise
        except Exception as exc:
            text = stream.text if stream is not None else ""
            thought = stream.reasoning if stream is not None else ""
            reply = {**reply, "content": text, "reasoning": thought, "streaming": False}
            error = {"role": "error", "content": one_line(exc, 300), "footer": "", "info": {}}
            self.messages = [*base, reply, error] if text or thought else [*base, error]
            raise
        self.messages = [*base, reply]
