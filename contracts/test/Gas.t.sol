// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {Diamond} from "../src/Diamond.sol";
import {SessionFacet} from "../src/SessionFacet.sol";
import {MarketplaceFacet} from "../src/MarketplaceFacet.sol";

/// Gas as transactions pay it. Each measured call runs in its own test function, so it is the
/// first thing its transaction does to storage (forge commits setUp; a test is a new transaction,
/// so storage "original values" are those of a real next block); contracts and their storage are
/// made cold before the call (vm.cool), and the intrinsic cost (21,000 + calldata) is added.
/// Scenario of the reference measurement: 0.0001 MOR/s, a 114 MOR deposit (about an hour with the
/// mainnet pools), steady state = the second session of the same user, provider and model.
/// contracts/gas_anvil.py measures the same lifecycle from real anvil receipts.
abstract contract GasBase is Base {
    uint256 internal constant REFERENCE_OPEN = 438_829;
    uint256 internal constant REFERENCE_CLOSE = 303_142;
    /// Budgets whose sum is under half the reference's 741,971: a regression of the lifecycle
    /// past that bound must break at least one of them.
    uint256 internal constant OPEN_BUDGET = 200_000;
    uint256 internal constant CLOSE_BUDGET = 170_985;
    uint256 internal constant GAS_PRICE = 1e14;
    uint256 internal constant DEPOSIT = 114 * MOR;

    function setUp() public virtual override {
        super.setUp();
        bidId = registerProvider(provider, 0, modelId, GAS_PRICE); // re-bid at 0.0001 MOR/s
        bytes32 first = open(DEPOSIT, false); // the first session: user, pair and stats exist
        vm.warp(market.getSession(first).endsAt + 1);
        close(first, providerKey);
    }

    /// Gas a transaction sending `data` to the diamond as `from` would use.
    function txGas(address from, bytes memory data) internal returns (uint256 used, bytes memory ret) {
        vm.cool(address(token));
        vm.cool(Diamond(payable(address(market))).facetAddress(SessionFacet.openSession.selector));
        vm.cool(Diamond(payable(address(market))).facetAddress(MarketplaceFacet.getBid.selector));
        vm.cool(address(market));
        uint256 size = address(market).code.length; // a transaction's `to` is warm, not its storage
        size;
        vm.prank(from);
        uint256 before = gasleft();
        bool ok;
        (ok, ret) = address(market).call(data);
        used = before - gasleft(); // its own statement: nothing else may run between the reads
        used += intrinsic(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    function intrinsic(bytes memory data) internal pure returns (uint256 gas) {
        gas = 21_000;
        for (uint256 i; i < data.length; ++i) {
            gas += data[i] == 0 ? 4 : 16;
        }
    }

    function openData(address who, uint256 amount) internal view returns (bytes memory) {
        bytes memory a = approval(bidId, who, block.timestamp);
        return abi.encodeCall(market.openSession, (who, amount, false, a, signEth(providerKey, a)));
    }

    function closeData(bytes32 id, uint256 signerKey) internal view returns (bytes memory) {
        bytes memory r = receipt(id, block.timestamp);
        return abi.encodeCall(market.closeSession, (r, signEth(signerKey, r)));
    }
}

contract GasOpenTest is GasBase {
    function test_gas_openSession_steadyState() public {
        (uint256 used,) = txGas(user, openData(user, DEPOSIT));
        vm.snapshotValue("session-lifecycle", "openSession", used);
        assertTrue(used <= OPEN_BUDGET, string.concat("openSession ", vm_toString(used)));
    }

    function test_gas_budgetsAreUnderHalfTheReference() public pure {
        assertTrue(2 * (OPEN_BUDGET + CLOSE_BUDGET) < REFERENCE_OPEN + REFERENCE_CLOSE, "budgets");
    }
}

contract GasCloseTest is GasBase {
    bytes32 internal second;

    function setUp() public override {
        super.setUp();
        second = open(DEPOSIT, false);
        vm.warp(market.getSession(second).endsAt + 1);
    }

    function test_gas_closeSession_naturalEnd() public {
        (uint256 used,) = txGas(user, closeData(second, providerKey));
        vm.snapshotValue("session-lifecycle", "closeSession-natural", used);
        assertTrue(used <= CLOSE_BUDGET, string.concat("closeSession ", vm_toString(used)));
    }
}

/// The other session operations, for the README's table (no bound asserted).
contract GasEarlyCloseTest is GasBase {
    bytes32 internal second;

    function setUp() public override {
        super.setUp();
        second = open(DEPOSIT, false);
        vm.warp(block.timestamp + 600);
    }

    function test_gas_closeSession_early() public {
        (uint256 used,) = txGas(user, closeData(second, providerKey));
        vm.snapshotValue("session-operations", "closeSession-early", used);
    }

    function test_gas_closeSession_dispute() public {
        (uint256 used,) = txGas(user, closeData(second, userKey));
        vm.snapshotValue("session-operations", "closeSession-dispute", used);
    }
}

contract GasAfterDisputeTest is GasBase {
    bytes32 internal second;

    function setUp() public override {
        super.setUp();
        second = open(DEPOSIT, false);
        vm.warp(block.timestamp + 600);
        close(second, userKey);
        vm.warp(block.timestamp - block.timestamp % 1 days + 1 days);
    }

    function test_gas_claimForProvider_heldPay() public {
        (uint256 used,) = txGas(provider, abi.encodeCall(market.claimForProvider, (second)));
        vm.snapshotValue("session-operations", "claimForProvider", used);
    }

    function test_gas_withdrawUserStakes_oneEntry() public {
        (uint256 used,) = txGas(user, abi.encodeCall(market.withdrawUserStakes, (user, 10)));
        vm.snapshotValue("session-operations", "withdrawUserStakes-1", used);
    }
}
