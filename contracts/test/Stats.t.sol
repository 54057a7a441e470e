// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {LibMarket} from "../src/LibMarket.sol";

/// Rating stats kept on close, checked against a model of the live rules: per provider-model pair
/// a running mean and sum of squares (Welford) of tps and ttft, durations and counts; per model
/// the same over the pairs' means, each pair's old mean removed before its new one is added.
contract StatsTest is Base {
    struct SD {
        int256 mean;
        int256 sqSum;
    }

    struct Pair {
        SD tps;
        SD ttft;
        uint256 totalDuration;
        uint256 successCount;
        uint256 totalCount;
    }

    struct ModelSD {
        SD tps;
        SD ttft;
        SD duration;
        uint256 count;
    }

    mapping(address => Pair) internal pairs;
    ModelSD internal expected;
    address[2] internal providers;
    uint256[2] internal keys;
    bytes32[2] internal bids;

    function setUp() public override {
        super.setUp();
        keys = [providerKey, 0xB2];
        providers = [provider, vm.addr(0xB2)];
        bids = [bidId, registerProvider(providers[1], 10 * MOR, modelId, 2 * PRICE)];
    }

    function clamp(int256 v) internal pure returns (int256) {
        if (v > type(int64).max) return type(int64).max;
        if (v < type(int64).min) return type(int64).min;
        return v;
    }

    function add(SD storage sd, int256 x, int256 n) internal {
        int256 m = sd.mean;
        int256 next = m + (x - m) / n;
        sd.mean = clamp(next);
        sd.sqSum = clamp(sd.sqSum + (x - next) * (x - m));
    }

    function remove(SD storage sd, int256 x, int256 n) internal {
        if (n == 0) {
            (sd.mean, sd.sqSum) = (0, 0);
            return;
        }
        int256 m = sd.mean;
        int256 next = m - (x - m) / n;
        sd.mean = clamp(next);
        sd.sqSum = clamp(sd.sqSum - (x - next) * (x - m));
    }

    /// One session with provider `which`, closed after `duration` seconds with the given metrics.
    function session(uint256 which, bool dispute, uint32 tps, uint32 ttft, uint256 duration) internal {
        bytes memory a = approval(bids[which], user, block.timestamp);
        bytes memory sig = signEth(keys[which], a);
        vm.prank(user);
        bytes32 id = market.openSession(user, 100 * MOR, false, a, sig);
        vm.warp(block.timestamp + duration);
        bytes memory r = abi.encode(id, block.chainid, uint128(block.timestamp), tps, ttft);
        sig = signEth(dispute ? userKey : keys[which], r);
        vm.prank(user);
        market.closeSession(r, sig);
        vm.warp(block.timestamp + 1); // next session's approval is a new one

        Pair storage p = pairs[providers[which]];
        p.totalCount += 1;
        if (dispute) return;
        if (p.successCount > 0) {
            remove(expected.tps, p.tps.mean, int256(expected.count) - 1);
            remove(expected.ttft, p.ttft.mean, int256(expected.count) - 1);
        } else {
            expected.count += 1;
        }
        p.successCount += 1;
        p.totalDuration += duration;
        add(p.tps, int256(uint256(tps)), int256(p.successCount));
        add(p.ttft, int256(uint256(ttft)), int256(p.successCount));
        int256 n = int256(expected.count);
        add(expected.duration, int256(p.totalDuration), n);
        add(expected.tps, p.tps.mean, n);
        add(expected.ttft, p.ttft.mean, n);
    }

    function check() internal view {
        for (uint256 i; i < 2; ++i) {
            Pair storage p = pairs[providers[i]];
            LibMarket.ProviderModelStats memory got = market.getProviderModelStats(modelId, providers[i]);
            assertTrue(got.tpsScaled1000.mean == p.tps.mean && got.tpsScaled1000.sqSum == p.tps.sqSum, "pair tps");
            assertTrue(got.ttftMs.mean == p.ttft.mean && got.ttftMs.sqSum == p.ttft.sqSum, "pair ttft");
            assertEq(got.totalDuration, p.totalDuration, "pair duration");
            assertEq(got.successCount, p.successCount, "pair successes");
            assertEq(got.totalCount, p.totalCount, "pair closes");
        }
        LibMarket.ModelStats memory m = market.getModelStats(modelId);
        assertTrue(m.tpsScaled1000.mean == expected.tps.mean && m.tpsScaled1000.sqSum == expected.tps.sqSum, "model tps");
        assertTrue(m.ttftMs.mean == expected.ttft.mean && m.ttftMs.sqSum == expected.ttft.sqSum, "model ttft");
        assertTrue(
            m.totalDuration.mean == expected.duration.mean && m.totalDuration.sqSum == expected.duration.sqSum,
            "model duration"
        );
        assertEq(m.count, expected.count, "model pairs");
    }

    function test_statsFollowTheLiveRules() public {
        session(0, false, 20_000, 300, 400);
        check();
        session(0, false, 10_000, 100, 500);
        check();
        session(1, false, 40_000, 900, 320);
        check();
        session(0, true, 1, 1, 10); // a dispute: counted, not scored
        check();
        session(1, false, 35_000, 700, 1000);
        session(0, false, 15_000, 250, 60);
        check();
        LibMarket.ProviderModelStats memory first = market.getProviderModelStats(modelId, provider);
        assertEq(first.successCount, 3, "three successes");
        assertEq(first.totalCount, 4, "four closes");
        assertEq(first.totalDuration, 960, "seconds of successful sessions");
        assertEq(uint256(int256(first.tpsScaled1000.mean)), 15_000, "mean tps");
    }

    function test_extremeMetricsSaturateInsteadOfBlockingCloses() public {
        // the live int64 accumulators overflow and revert every later close (a griefing DoS)
        for (uint256 i; i < 6; ++i) {
            session(i % 2, false, type(uint32).max, i % 2 == 0 ? type(uint32).max : 0, 300);
        }
        check();
        session(0, false, 1000, 100, 300); // an honest close still goes through
        check();
    }

    function testFuzz_statsFollowTheLiveRules(uint256 seed) public {
        for (uint256 i; i < 5; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            session(r % 2, (r >> 8) % 4 == 0, uint32(r >> 16) % 100_000, uint32(r >> 48) % 5_000, 1 + (r >> 80) % 3000);
            check();
        }
    }
}
