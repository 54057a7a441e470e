"""Marketplace listings read from the Diamond in a few batched round trips: raw contract
structs (dicts), for the router and for the tables built on top."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mor_workbench.chain.client import Call, Chain
from mor_workbench.errors import ConfigurationError, ModelNotFound, MorError

__all__ = [
    "PAGE",
    "active_bids",
    "active_model_ids",
    "check",
    "listing",
    "models_by_id",
    "resolve_model",
]

PAGE = 500


def check(results: Sequence[Any]) -> list[Any]:
    for item in results:
        if isinstance(item, MorError):
            raise item
    return list(results)


async def listing(chain: Chain, fn: str, keys: Sequence[Any]) -> list[list[Any]]:
    """All items of a paged `fn(key, offset, limit) -> (items, total)` listing, for each key."""
    first = check(await chain.read_many([Call(fn, (*k, 0, PAGE)) for k in keys]))
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


async def resolve_model(chain: Chain, model: str) -> tuple[bytes, str]:
    """(id, name) of an active model given its name or its 0x id; a clear error otherwise."""
    ids = await active_model_ids(chain)
    by_id = await models_by_id(chain, ids)
    if model.startswith("0x") and len(model) == 66:
        wanted = bytes.fromhex(model[2:])
        if wanted in by_id:
            return wanted, by_id[wanted]["name"]
    matches = [(i, m["name"]) for i, m in by_id.items() if m["name"] == model]
    if len(matches) == 1:
        return matches[0]
    names = sorted(m["name"] for m in by_id.values())
    if matches:
        raise ConfigurationError(f"model name {model!r} is ambiguous: pass its 0x id instead")
    raise ModelNotFound(f"no active model {model!r}: choose one of {', '.join(names) or '(none)'}")


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
