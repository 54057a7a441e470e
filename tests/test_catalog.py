"""The curated catalog beside the chain listing (issue 12 §2): `wb.models(catalog=…)` reads a
feed served here on 127.0.0.1, joins it onto the chain rows, and falls back to the chain with a
warning when the feed cannot be read.

tests/data/active_models.json is shaped exactly as the live feed at
https://active.mor.org/active_models.json according to the public source that reads it
(Morpheus-Lumerin-Node `proxy-router/mobile/sdk_models.go`, `activeModelsResponse`:
`{"models": [{Id, IpfsCID, Fee, Stake, Owner, Name, Tags, CreatedAt, IsDeleted, ModelType}],
"last_updated"}`). It was written from that source, not captured from the live host. Sandbox
model ids depend on the sandbox's owner account, so the entries named as sandbox models get
their chain id when served; `kimi-k2.6` stays a model this chain does not have.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

import mor_workbench as mor

RECORDED = json.loads((Path(__file__).parent / "data" / "active_models.json").read_text())
Reply = Callable[[], tuple[int, bytes]]


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], str]]:
    """Serve one reply (status, body) at http://127.0.0.1:<port>/active_models.json."""
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Reply) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = reply()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/active_models.json"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _feed_for(chain_models: pd.DataFrame) -> dict:
    """The recorded feed with each sandbox-named entry given this chain's id for the name."""
    ids = dict(zip(chain_models["name"], chain_models["id"], strict=True))
    models = [{**m, "Id": ids.get(m["Name"], m["Id"])} for m in RECORDED["models"]]
    return {**RECORDED, "models": models}


def test_catalog_keeps_the_listed_models_and_joins_the_feed(wb, serve) -> None:
    chain = wb.models()
    feed = _feed_for(chain)
    url = serve(lambda: (200, json.dumps(feed).encode()))
    curated = wb.models(catalog=url)
    listed = {m["Id"] for m in feed["models"] if not m["IsDeleted"]}
    expected = chain.loc[chain["id"].isin(listed)]
    assert list(curated["id"]) == list(expected["id"])  # chain order, chain rows
    assert 0 < len(curated) < len(chain)  # a model with no healthy provider is left out
    deleted = {m["Name"] for m in feed["models"] if m["IsDeleted"]}
    assert deleted and not deleted & set(curated["name"])
    assert "kimi-k2.6" not in set(curated["name"])  # listed, but not on this chain
    by_name = {m["Name"]: m["ModelType"] for m in feed["models"]}
    assert list(curated["catalog_type"]) == [by_name[n] for n in curated["name"]]
    assert (curated["type"] == curated["catalog_type"]).all()  # both read the tags alike
    stamp = pd.Timestamp(feed["last_updated"], unit="s", tz="UTC")
    assert (curated["catalog_updated_at"] == stamp).all()
    columns = ["id", "name", "tags", "type", "stake_wei"]
    pd.testing.assert_frame_equal(
        curated[columns], expected[columns].reset_index(drop=True), check_dtype=False
    )


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (lambda: (503, b"upstream down"), "HTTPStatusError"),
        (lambda: (200, b"<html>maintenance</html>"), "JSONDecodeError"),
        (lambda: (200, b'{"data": []}'), "KeyError"),
    ],
)
def test_an_unreadable_feed_falls_back_to_the_chain_with_a_warning(wb, serve, reply, why):
    url = serve(reply)
    with pytest.warns(UserWarning, match=rf"catalog {url} could not be read \({why}"):
        fallback = wb.models(catalog=url)
    pd.testing.assert_frame_equal(fallback, wb.models())


def test_an_unreachable_feed_falls_back_to_the_chain_with_a_warning(wb, serve) -> None:
    url = serve(lambda: (200, b"{}"))
    port = url.split(":")[2].split("/")[0]
    gone = url.replace(port, "1")  # nothing listens on port 1
    with pytest.warns(UserWarning, match="could not be read.*showing the chain's listing"):
        fallback = wb.models(catalog=gone)
    pd.testing.assert_frame_equal(fallback, wb.models())


def test_a_feed_of_another_network_falls_back_to_the_chain_with_a_warning(wb, serve) -> None:
    url = serve(lambda: (200, json.dumps(RECORDED).encode()))  # no id of this chain in it
    with pytest.warns(UserWarning, match="lists none of this chain's .* active models"):
        fallback = wb.models(catalog=url)
    pd.testing.assert_frame_equal(fallback, wb.models())


def test_a_catalog_option_that_is_no_feed_is_refused(wb) -> None:
    with pytest.raises(mor.ConfigurationError, match="catalog='ftp://x' is neither True"):
        wb.models(catalog="ftp://x")
