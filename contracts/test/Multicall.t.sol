// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {Multicall3} from "../src/Multicall3.sol";

contract Target {
    function value(uint256 x) external pure returns (uint256) {
        return x * 2;
    }

    function fail() external pure {
        revert("nope");
    }

    function pay() external payable returns (uint256) {
        return msg.value;
    }
}

/// Multicall3 placed at its canonical address by code alone, as the sandbox does (anvil_setCode).
contract MulticallTest is Base {
    Multicall3 internal mc = Multicall3(0xcA11bde05977b3631167028862bE2a173976CA11);
    Target internal target;

    function setUp() public override {
        vm.etch(address(mc), vm.getDeployedCode("Multicall3.sol:Multicall3"));
        target = new Target();
        vm.warp(NOW);
    }

    function call(bytes memory data) internal view returns (Multicall3.Call memory) {
        return Multicall3.Call(address(target), data);
    }

    function test_aggregateReturnsBlockNumberAndResults() public {
        Multicall3.Call[] memory calls = new Multicall3.Call[](2);
        calls[0] = call(abi.encodeCall(Target.value, (3)));
        calls[1] = call(abi.encodeCall(Target.value, (4)));
        (uint256 blockNumber, bytes[] memory out) = mc.aggregate(calls);
        assertEq(blockNumber, block.number, "block number");
        assertEq(abi.decode(out[0], (uint256)), 6, "first");
        assertEq(abi.decode(out[1], (uint256)), 8, "second");
        calls[1] = call(abi.encodeCall(Target.fail, ()));
        vm.expectRevert(bytes("Multicall3: call failed"));
        mc.aggregate(calls);
    }

    function test_tryAggregateReportsFailuresUnlessRequired() public {
        Multicall3.Call[] memory calls = new Multicall3.Call[](2);
        calls[0] = call(abi.encodeCall(Target.value, (5)));
        calls[1] = call(abi.encodeCall(Target.fail, ()));
        Multicall3.Result[] memory results = mc.tryAggregate(false, calls);
        assertTrue(results[0].success && !results[1].success, "success flags");
        assertEq(abi.decode(results[0].returnData, (uint256)), 10, "value");
        vm.expectRevert(bytes("Multicall3: call failed"));
        mc.tryAggregate(true, calls);
    }

    function test_aggregate3AllowsFailurePerCall() public {
        Multicall3.Call3[] memory calls = new Multicall3.Call3[](2);
        calls[0] = Multicall3.Call3(address(target), false, abi.encodeCall(Target.value, (1)));
        calls[1] = Multicall3.Call3(address(target), true, abi.encodeCall(Target.fail, ()));
        Multicall3.Result[] memory results = mc.aggregate3(calls);
        assertTrue(results[0].success && !results[1].success, "flags");
        calls[1].allowFailure = false;
        vm.expectRevert(bytes("Multicall3: call failed"));
        mc.aggregate3(calls);
    }

    function test_chainReads() public {
        vm.deal(address(0xBEEF), 3 ether);
        assertEq(mc.getEthBalance(address(0xBEEF)), 3 ether, "balance");
        assertEq(mc.getBlockNumber(), block.number, "block");
        assertEq(mc.getCurrentBlockTimestamp(), NOW, "timestamp");
        assertEq(mc.getChainId(), block.chainid, "chain id");
    }

    function test_blockAndAggregateVariants() public {
        vm.roll(100);
        Multicall3.Call[] memory calls = new Multicall3.Call[](2);
        calls[0] = call(abi.encodeCall(Target.value, (21)));
        calls[1] = call(abi.encodeCall(Target.fail, ()));
        (uint256 number, bytes32 hash, Multicall3.Result[] memory results) = mc.tryBlockAndAggregate(false, calls);
        assertEq(number, 100, "block number");
        assertTrue(hash == blockhash(100), "block hash");
        assertTrue(results[0].success && !results[1].success, "flags");
        vm.expectRevert(bytes("Multicall3: call failed"));
        mc.blockAndAggregate(calls);
        Multicall3.Call[] memory good = new Multicall3.Call[](1);
        good[0] = calls[0];
        (number,, results) = mc.blockAndAggregate(good);
        assertEq(abi.decode(results[0].returnData, (uint256)), 42, "value");
    }

    function test_aggregate3ValueForwardsEachValue() public {
        Multicall3.Call3Value[] memory calls = new Multicall3.Call3Value[](2);
        calls[0] = Multicall3.Call3Value(address(target), false, 1, abi.encodeCall(Target.pay, ()));
        calls[1] = Multicall3.Call3Value(address(target), false, 2, abi.encodeCall(Target.pay, ()));
        vm.deal(address(this), 10);
        Multicall3.Result[] memory results = mc.aggregate3Value{value: 3}(calls);
        assertEq(abi.decode(results[1].returnData, (uint256)), 2, "second value");
        assertEq(address(target).balance, 3, "forwarded");
        vm.expectRevert(bytes("Multicall3: value mismatch"));
        mc.aggregate3Value{value: 4}(calls);
    }

    function test_blockReads() public {
        vm.roll(50);
        vm.fee(7);
        vm.coinbase(address(0xC0FFEE));
        vm.prevrandao(bytes32(uint256(9)));
        assertEq(mc.getBasefee(), 7, "base fee");
        assertTrue(mc.getCurrentBlockCoinbase() == address(0xC0FFEE), "coinbase");
        assertEq(mc.getCurrentBlockDifficulty(), 9, "prevrandao");
        assertEq(mc.getCurrentBlockGasLimit(), block.gaslimit, "gas limit");
        assertTrue(mc.getBlockHash(49) == blockhash(49) && mc.getLastBlockHash() == blockhash(49), "hashes");
    }
}
