"""The shipped contracts match their sources, and speak the live network's ABI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from mor_workbench.chain.abi import canonical_type, load_abi

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "mor_workbench" / "chain" / "artifacts"
LIVE_ABI = ROOT / "mor_workbench" / "chain" / "abi"


def load_exporter():
    spec = importlib.util.spec_from_file_location(
        "export_artifacts", ROOT / "contracts" / "export_artifacts.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_artifacts_match_a_fresh_build(tmp_path: Path) -> None:
    forge = ROOT / "node_modules" / ".bin" / "forge"
    if not forge.exists():
        pytest.fail("forge is missing: run `make setup` (npm ci) first")
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{forge.parent}:{os.environ['PATH']}"}
    build = subprocess.run(
        [str(forge), "build", "--out", str(out), "--cache-path", str(tmp_path / "cache")],
        cwd=ROOT / "contracts",
        env=env,
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"forge build failed:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}")
    fresh = load_exporter().export(out=out)
    for name, content in fresh.items():
        shipped = json.loads((ARTIFACTS / name).read_text())
        assert shipped == content, f"{name} drifted from the sources: run `make artifacts`"


def signature(entry: dict) -> str:
    return f"{entry['name']}({','.join(canonical_type(i) for i in entry.get('inputs', []))})"


def outputs(entry: dict) -> list[str]:
    return [canonical_type(o) for o in entry.get("outputs", [])]


def entries(abi: list[dict], kind: str) -> dict[str, dict]:
    return {signature(e): e for e in abi if e["type"] == kind}


# Live-ABI entries our design deliberately leaves out, and why.
NOT_KEPT = {
    # The live Diamond's storage-slot constants: they name its diamond-storage layout, which
    # ours does not share (one packed layout, see contracts/README.md); nothing reads them.
    "BIDS_STORAGE_SLOT()",
    "MODELS_STORAGE_SLOT()",
    "PROVIDERS_STORAGE_SLOT()",
    "SESSIONS_STORAGE_SLOT()",
    "STATS_STORAGE_SLOT()",
    "MARKET_STORAGE_SLOT()",
    "DELEGATION_STORAGE_SLOT()",
    "DIAMOND_OWNABLE_STORAGE_SLOT()",
    # Per-facet initialisers whose live bodies are empty: there is nothing to initialise.
    "__ProviderRegistry_init()",
    "__ModelRegistry_init()",
}
# Emitted live only by the per-slot initializer bookkeeping we do not have.
NOT_EMITTED = {"Initialized"}
# Declared in the live ABI but never emitted or raised by the live contracts: nothing to match.
DECLARED_UNUSED = {
    "ProviderWithdrawn",
    "ProviderNotDeregistered",
    "ProviderNoStake",
    "ProviderNothingToWithdraw",
    "ModelNotFound",
    "SessionProviderNothingToClaimInThisPeriod",
}
# The Go bindings misspell four errors (three s's); the deployed source and we use "Session…".
MISSPELLED = {
    "SesssionApproveExpired",
    "SesssionApprovedForAnotherChainId",
    "SesssionReceiptExpired",
    "SesssionReceiptForAnotherChainId",
}


def ours() -> list[dict]:
    plan = json.loads((ARTIFACTS / "deployment.json").read_text())
    abi: list[dict] = []
    for facet in plan["facets"]:
        abi += json.loads((ARTIFACTS / f"{facet['name']}.json").read_text())["abi"]
    return abi


@pytest.mark.parametrize(
    "facet", ["SessionRouter", "Marketplace", "ProviderRegistry", "ModelRegistry"]
)
def test_diamond_serves_every_live_function_event_and_error(facet: str) -> None:
    live = json.loads((LIVE_ABI / f"{facet}.json").read_text())
    mine = ours()
    my_functions, my_events, my_errors = (entries(mine, k) for k in ("function", "event", "error"))
    for sig, entry in entries(live, "function").items():
        if sig in NOT_KEPT:
            continue
        assert sig in my_functions, f"missing function {sig}"
        assert outputs(my_functions[sig]) == outputs(entry), f"{sig} returns a different layout"
    for sig, entry in entries(live, "event").items():
        if entry["name"] in NOT_EMITTED or entry["name"] in DECLARED_UNUSED:
            continue
        assert sig in my_events, f"missing event {sig}"
        indexed = [i.get("indexed", False) for i in entry["inputs"]]
        assert [i.get("indexed", False) for i in my_events[sig]["inputs"]] == indexed, sig
    for sig, entry in entries(live, "error").items():
        name = entry["name"]
        wanted = sig.replace("Sesssion", "Session") if name in MISSPELLED else sig
        if name in DECLARED_UNUSED:
            continue
        assert wanted in my_errors, f"missing error {wanted}"


@pytest.mark.parametrize("name", ["MorpheusToken", "Multicall3"])
def test_token_and_multicall_serve_the_live_interface(name: str) -> None:
    live = entries(json.loads((LIVE_ABI / f"{name}.json").read_text()), "function")
    mine = entries(json.loads((ARTIFACTS / f"{name}.json").read_text())["abi"], "function")
    for sig, entry in live.items():
        assert sig in mine, f"{name}.{sig} is missing"
        assert outputs(mine[sig]) == outputs(entry), f"{name}.{sig} returns a different layout"
    for sig in mine:
        assert sig in live, f"{name}.{sig} is not in the live ABI"
    if name == "MorpheusToken":
        abi = json.loads((ARTIFACTS / f"{name}.json").read_text())["abi"]
        events = set(entries(abi, "event"))
        assert {"Transfer(address,address,uint256)", "Approval(address,address,uint256)"} <= events


def test_deployment_cuts_route_every_facet_function_once() -> None:
    from eth_utils import keccak

    plan = json.loads((ARTIFACTS / "deployment.json").read_text())
    assert plan["diamond"] == "Diamond"
    seen: set[str] = set()
    for facet in plan["facets"]:
        abi = json.loads((ARTIFACTS / f"{facet['name']}.json").read_text())["abi"]
        wanted = {"0x" + keccak(text=sig)[:4].hex() for sig in entries(abi, "function")}
        assert set(facet["selectors"]) == wanted, f"{facet['name']}: cuts differ from its ABI"
        assert not seen & wanted, "a selector is routed to two facets"
        seen |= wanted
    diamond = json.loads((ARTIFACTS / "Diamond.json").read_text())
    constructor = next(e for e in diamond["abi"] if e["type"] == "constructor")
    assert [canonical_type(i) for i in constructor["inputs"]] == ["address", "(address,bytes4[])[]"]


def test_artifacts_fit_the_contract_size_limit() -> None:
    for path in ARTIFACTS.glob("*.json"):
        if path.name == "deployment.json":
            continue
        code = json.loads(path.read_text())["deployedBytecode"].removeprefix("0x")
        assert 0 < len(code) // 2 <= 24_576, f"{path.stem} is {len(code) // 2} bytes"


def test_router_decodes_the_deployed_error_spelling() -> None:
    from eth_utils import keccak

    selector = keccak(text="SessionApproveExpired()")[:4]
    codec = load_abi("SessionRouter", "SessionRouterErrors")
    assert codec.decode_error(selector) == ("SessionApproveExpired", ())
