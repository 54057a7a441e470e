"""Marketplace listings read from the Diamond in a few batched round trips: raw contract
structs (dicts), for the router and for the tables built on top."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mor_workbench.chain.client import Call, Chain
from mor_workbench.errors import ModelNotFound, MorError

__all__ = [
    "PAGE",
    "BidBook",
    "active_bids",
    "active_model_ids",
    "bid_book",
    "check",
    "find_model",
    "listing",
    "models_by_id",
    "resolve_model",
]

PAGE = 500
WEB_SUFFIX = ":web"  # live names of web-search variants (see resolve_model)


def check(results: Sequence[Any]) -> list[Any]:
    for item in results:
        if isinstance(item, MorError):
            raise item
    return list(results)


async def listing(chain: Chain, fn: str, keys: Sequence[Any]) -> list[list[Any]]:
    """All items of a paged `fn(key, offset, limit) -> (items, total)` listing, for each key."""
    first = check(await chain.read_many([Call(fn, (*k, 0, PAGE)) for k in keys]))
    return await _rest_of(chain, fn, keys, first)


async def _rest_of(
    chain: Chain, fn: str, keys: Sequence[Any], first: Sequence[tuple[list[Any], int]]
) -> list[list[Any]]:
    """Each key's items: its first page (already read) and all later pages, read together."""
    items = [list(page) for page, _ in first]
    rest: list[tuple[int, Call]] = [
        (i, Call(fn, (*k, offset, PAGE)))
        for i, (k, (_, total)) in enumerate(zip(keys, first, strict=True))
        for offset in range(PAGE, total, PAGE)
    ]
    pages = check(await chain.read_many([c for _, c in rest]))
    for (i, _), (page, _) in zip(rest, pages, strict=True):
        items[i].extend(page)
    return items


async def active_model_ids(chain: Chain) -> list[bytes]:
    return (await listing(chain, "getActiveModelIds", [()]))[0]


async def models_by_id(chain: Chain, ids: Sequence[bytes]) -> dict[bytes, dict[str, Any]]:
    found = check(await chain.read_many([Call("getModel", (i,)) for i in ids]))
    return dict(zip(ids, found, strict=True))


async def find_model(chain: Chain, model: str) -> tuple[bytes, dict[str, Any]]:
    """(id, struct) of the active model a user means by `model`: its 0x id, or its name as
    users type it (see `resolve_model`). Raises `ModelNotFound` ("no active model …")."""
    ids = await active_model_ids(chain)
    by_id = await models_by_id(chain, ids)
    if _looks_like_id(model):
        try:
            wanted = bytes.fromhex(model[2:])
        except ValueError:
            wanted = b""
        if wanted in by_id:
            return wanted, by_id[wanted]
    named = _named(model, by_id)
    if len(named) == 1:
        return named[0], by_id[named[0]]
    if named:
        return await _busiest(chain, model, named, by_id)
    raise ModelNotFound(_no_active_model(model, sorted({m["name"] for m in by_id.values()})))


async def resolve_model(chain: Chain, model: str) -> tuple[bytes, str]:
    """(id, name) of the active model a user means by `model`, else `ModelNotFound`
    whose message starts "no active model" (`serve` answers it with a 404).

    Accepted: the model's 0x id; its exact name; its name in any case (as the live gateway and
    NodeNeo's SDK match names). A `:web` suffix is part of a name, not an option: on the live
    network `llama-3.3-70b:web` is a model of its own whose providers add web search (tag
    `web-search-enabled`; gateway `models/prod_model_price.json`), so it never falls back to the
    plain model nor the reverse. When several active models carry the name, the one with the
    most live bids is used (the newest on a tie) and a warning names it. A near miss is answered
    with the closest names (difflib, as the live gateway does).
    """
    model_id, found = await find_model(chain, model)
    return model_id, found["name"]


def _looks_like_id(model: str) -> bool:
    return model.startswith("0x") and len(model) == 66


def _named(model: str, by_id: dict[bytes, dict[str, Any]]) -> list[bytes]:
    """Ids whose name is `model`, exactly if any, else ignoring case."""
    exact = [i for i, m in by_id.items() if m["name"] == model]
    if exact:
        return exact
    folded = model.casefold()
    return [i for i, m in by_id.items() if m["name"].casefold() == folded]


async def _busiest(
    chain: Chain, model: str, ids: list[bytes], by_id: dict[bytes, dict[str, Any]]
) -> tuple[bytes, dict[str, Any]]:
    """Among active models that share a name, the one with the most live bids (newest on a
    tie), with a warning that says which and how to pick another."""
    pages = await listing(chain, "getModelActiveBids", [(i,) for i in ids])
    bid_count = {i: len(page) for i, page in zip(ids, pages, strict=True)}
    chosen = max(ids, key=lambda i: (bid_count[i], by_id[i]["createdAt"]))
    others = ", ".join(f"0x{i.hex()} (live bids: {bid_count[i]})" for i in ids if i != chosen)
    warnings.warn(
        f"{len(ids)} active models are named {model!r}: using 0x{chosen.hex()} "
        f"(live bids: {bid_count[chosen]}); pass a 0x id to use another: {others}",
        stacklevel=3,
    )
    return chosen, by_id[chosen]


def _no_active_model(model: str, names: list[str]) -> str:
    """The one-line miss: the closest names when there are some, else every name."""
    if _looks_like_id(model):
        return f"no active model with id {model}: pass an id from wb.models()"
    by_folded = {n.casefold(): n for n in names}
    plain = model.casefold().removesuffix(WEB_SUFFIX)
    if plain != model.casefold() and plain in by_folded:
        base = by_folded[plain]
        return (
            f"no active model {model!r}: no provider offers {base!r} with web search; "
            f"did you mean {base!r} (without web search)?"
        )
    close = difflib.get_close_matches(model.casefold(), list(by_folded), n=3)
    if close:
        hints = " or ".join(repr(by_folded[c]) for c in close)
        return f"no active model {model!r}: did you mean {hints}?"
    return f"no active model {model!r}: choose one of {', '.join(names) or '(none)'}"


async def active_bids(
    chain: Chain, model_ids: Sequence[bytes]
) -> list[tuple[bytes, dict[str, Any]]]:
    """(bid id, bid) of every active bid of these models."""
    bid_ids = [
        b
        for page in await listing(chain, "getModelActiveBids", [(i,) for i in model_ids])
        for b in page
    ]
    found = check(await chain.read_many([Call("getBid", (b,)) for b in bid_ids]))
    return list(zip(bid_ids, found, strict=True))


@dataclass(frozen=True)
class BidBook:
    """Active bids with everything they are judged by, as the contracts return them (wei,
    seconds): the bids' models, their providers (endpoint, stake), each provider-model pair's
    stats, each model's stats and the providers' minimum stake."""

    models: dict[bytes, dict[str, Any]]
    bids: list[tuple[bytes, dict[str, Any]]]
    providers: dict[str, dict[str, Any]]
    pair_stats: dict[tuple[bytes, str], dict[str, Any]]  # by (model id, provider)
    model_stats: dict[bytes, dict[str, Any]]
    provider_minimum_stake: int


async def bid_book(chain: Chain, model: str | None = None) -> BidBook:
    """The `BidBook` of one model (a name or id, see `resolve_model`; `ModelNotFound` when no
    active model matches) or of every active model.

    Each level of reads waits only for the one before it, and each is one batched read
    (`Chain.read_many`): the active model ids; the models, their stats, the minimum stake and
    the first page of each model's bid ids; the later pages (only past `PAGE` bids a model);
    the bids; their providers and pair stats. Every bid is read once.
    """
    if model is None:
        ids = await active_model_ids(chain)
        known: dict[bytes, dict[str, Any]] = {}
    else:
        model_id, found = await find_model(chain, model)
        ids, known = [model_id], {model_id: found}
    wanted = [i for i in ids if i not in known]
    head = [Call("getProviderMinimumStake")]
    head += [Call("getModel", (i,)) for i in wanted]
    head += [Call("getModelStats", (i,)) for i in ids]
    head += [Call("getModelActiveBids", (i, 0, PAGE)) for i in ids]
    results = check(await chain.read_many(head))
    minimum_stake, results = results[0], results[1:]
    models = {**known, **dict(zip(wanted, results[: len(wanted)], strict=True))}
    results = results[len(wanted) :]
    model_stats = dict(zip(ids, results[: len(ids)], strict=True))
    pages = await _rest_of(chain, "getModelActiveBids", [(i,) for i in ids], results[len(ids) :])
    bid_ids = [b for page in pages for b in page]
    found_bids = check(await chain.read_many([Call("getBid", (b,)) for b in bid_ids]))
    bids = list(zip(bid_ids, found_bids, strict=True))
    providers = sorted({b["provider"] for _, b in bids})
    pairs = sorted({(b["modelId"], b["provider"]) for _, b in bids})
    tail = [Call("getProvider", (p,)) for p in providers]
    tail += [Call("getProviderModelStats", pair) for pair in pairs]
    results = check(await chain.read_many(tail))
    return BidBook(
        models=models,
        bids=bids,
        providers=dict(zip(providers, results[: len(providers)], strict=True)),
        pair_stats=dict(zip(pairs, results[len(providers) :], strict=True)),
        model_stats=model_stats,
        provider_minimum_stake=minimum_stake,
    )
