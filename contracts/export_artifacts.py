"""Copy the compiled contracts the package deploys into mor_workbench/chain/artifacts/.

Writes <Name>.json = {contractName, abi, bytecode, deployedBytecode} for each contract, and
deployment.json = the Diamond's cuts (each facet with the selectors it serves). Run from the
repository root after `forge build` (the Makefile's `artifacts` target does both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eth_utils import keccak

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "contracts" / "out"
TARGET = ROOT / "mor_workbench" / "chain" / "artifacts"
CONTRACTS = {
    "MorpheusToken": "MorpheusToken.sol",
    "Multicall3": "Multicall3.sol",
    "Diamond": "Diamond.sol",
    "MarketplaceFacet": "MarketplaceFacet.sol",
    "SessionFacet": "SessionFacet.sol",
}
FACETS = ["MarketplaceFacet", "SessionFacet"]


def canonical(entry: dict) -> str:
    if entry["type"].startswith("tuple"):
        inner = ",".join(canonical(c) for c in entry["components"])
        return f"({inner}){entry['type'][len('tuple') :]}"
    return entry["type"]


def selectors(abi: list[dict]) -> list[str]:
    return [
        "0x" + keccak(text=f"{e['name']}({','.join(canonical(i) for i in e['inputs'])})")[:4].hex()
        for e in abi
        if e["type"] == "function"
    ]


def artifact(name: str, source: str, out: Path) -> dict:
    compiled = json.loads((out / source / f"{name}.json").read_text())
    return {
        "contractName": name,
        "abi": compiled["abi"],
        "bytecode": compiled["bytecode"]["object"],
        "deployedBytecode": compiled["deployedBytecode"]["object"],
    }


def export(out: Path = OUT, target: Path = TARGET) -> dict[str, dict]:
    """Everything the package ships, by file name (also used by the drift test)."""
    files = {f"{name}.json": artifact(name, source, out) for name, source in CONTRACTS.items()}
    files["deployment.json"] = {
        "diamond": "Diamond",
        "facets": [{"name": f, "selectors": selectors(files[f"{f}.json"]["abi"])} for f in FACETS],
    }
    return files


def main() -> int:
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, content in export().items():
        (TARGET / name).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(CONTRACTS) + 1} artifacts to {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
