"""The market's recent past from chain events: every session opened in the last days, with its
provider, model, price and how long it ran. Long scans are paged by blocks with a progress bar."""

from __future__ import annotations

import pandas as pd
from tqdm.auto import tqdm

from mor_workbench.chain.client import Chain
from mor_workbench.errors import ConfigurationError
from mor_workbench.market.tables import sessions_by_id

__all__ = ["first_block_after", "history"]

BLOCKS_PER_QUERY = 10_000  # public RPCs refuse eth_getLogs over wider ranges


async def _timestamp(chain: Chain, number: int) -> int:
    block = await chain.rpc.request("eth_getBlockByNumber", [hex(number), False])
    return int(block["timestamp"], 16)


async def first_block_after(chain: Chain, timestamp: int, latest: int) -> int:
    """The first block at or after `timestamp` (binary search over block times)."""
    low, high = 0, latest
    while low < high:
        middle = (low + high) // 2
        if await _timestamp(chain, middle) < timestamp:
            low = middle + 1
        else:
            high = middle
    return low


async def history(chain: Chain, days: float = 7.0, *, progress: bool = True) -> pd.DataFrame:
    """Sessions opened in the last `days` days (by chain time), oldest first, with
    `planned_s` (booked length) and `used_s` (how long it ran, so far for open ones)."""
    if not days > 0:
        raise ConfigurationError(f"days={days!r} must be a positive number of days")
    latest = int(await chain.rpc.request("eth_blockNumber", []), 16)
    now = await _timestamp(chain, latest)
    start = await first_block_after(chain, int(now - days * 86400), latest)
    ids: list[bytes] = []
    ranges = range(start, latest + 1, BLOCKS_PER_QUERY)
    for low in tqdm(ranges, desc="scanning blocks", unit="page", disable=not progress):
        high = min(low + BLOCKS_PER_QUERY - 1, latest)
        logs = await chain.get_logs("SessionOpened", from_block=low, to_block=high)
        ids += [log["sessionId"] for log in logs]
    frame = await sessions_by_id(chain, ids)
    if frame.empty:
        return frame.assign(planned_s=pd.Series(dtype=float), used_s=pd.Series(dtype=float))
    now_at = pd.Timestamp(now, unit="s", tz="UTC")
    ran_until = frame["closed_at"].fillna(frame["ends_at"].where(frame["ends_at"] < now_at, now_at))
    frame["planned_s"] = (frame["ends_at"] - frame["opened_at"]).dt.total_seconds()
    frame["used_s"] = (ran_until - frame["opened_at"]).dt.total_seconds()
    return frame.sort_values("opened_at", kind="stable").reset_index(drop=True)
