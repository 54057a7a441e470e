"""Copy the compiled contracts the package deploys into mor_workbench/chain/artifacts/.

Writes <Name>.json = {contractName, abi, bytecode, deployedBytecode} for each contract, and
deployment.json = the Diamond's cuts (each facet with the selectors it serves, taken from
forge's methodIdentifiers). Plain python3, standard library only. Run from anywhere after
`forge build` (the Makefile's `artifacts` target does both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def compiled(name: str, out: Path) -> dict:
    return json.loads((out / CONTRACTS[name] / f"{name}.json").read_text())


def artifact(name: str, out: Path) -> dict:
    forge = compiled(name, out)
    return {
        "contractName": name,
        "abi": forge["abi"],
        "bytecode": forge["bytecode"]["object"],
        "deployedBytecode": forge["deployedBytecode"]["object"],
    }


def selectors(name: str, out: Path) -> list[str]:
    """Every external function of a facet, as 0x-prefixed 4-byte selectors, by signature."""
    ids = compiled(name, out)["methodIdentifiers"]
    return ["0x" + ids[signature] for signature in sorted(ids)]


def export(out: Path = OUT) -> dict[str, dict]:
    """Everything the package ships, by file name (also used by the drift test)."""
    files = {f"{name}.json": artifact(name, out) for name in CONTRACTS}
    files["deployment.json"] = {
        "diamond": "Diamond",
        "facets": [{"name": f, "selectors": selectors(f, out)} for f in FACETS],
    }
    return files


def main() -> int:
    TARGET.mkdir(parents=True, exist_ok=True)
    files = export()
    for name, content in files.items():
        (TARGET / name).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(files)} artifacts to {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
