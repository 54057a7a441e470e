// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {LibMarket} from "../src/LibMarket.sol";
import {SessionFacet} from "../src/SessionFacet.sol";

/// The emission-pool maths behind session length: pools, compute balance, supply, stipends.
contract EconomicsTest is Base {
    // 00:00 UTC of 2024-06-01, 2025-11-24 and 2026-06-01, and a day after the schedule ends
    uint128 internal constant JUNE_2024 = 1717200000;
    uint128 internal constant NOV_2025 = 1763942400;
    uint128 internal constant JUNE_2026 = 1780272000;
    uint128 internal constant YEAR_2045 = 2366841600;

    function test_routerConfiguration() public view {
        assertTrue(market.getFundingAccount() == admin, "funding account");
        assertEq(market.getMaxSessionDuration(), 7 days, "max duration");
        LibMarket.Pool[] memory pools = market.getPools();
        assertEq(pools.length, 5, "five pools");
        LibMarket.Pool memory compute = market.getPool(3);
        assertEq(compute.initialReward, 3456 * MOR, "compute pool reward");
        assertEq(compute.rewardDecrease, 592558728240000000, "compute pool decrease");
        assertEq(compute.payoutStart, START, "payout start");
        assertEq(compute.decreaseInterval, 1 days, "interval");
        assertEq(market.MIN_SESSION_DURATION(), 300, "MIN_SESSION_DURATION");
        assertEq(market.SIGNATURE_TTL(), 600, "SIGNATURE_TTL");
        assertEq(market.COMPUTE_POOL_INDEX(), 3, "COMPUTE_POOL_INDEX");
    }

    function test_poolIndexOutOfBounds() public {
        vm.expectRevert(SessionFacet.SessionPoolIndexOutOfBounds.selector);
        market.getPool(5);
        LibMarket.Pool memory pool = market.getPool(0);
        vm.expectRevert(SessionFacet.SessionPoolIndexOutOfBounds.selector);
        market.setPoolConfig(5, pool);
    }

    function test_adminSettersAreOwnerOnly() public {
        vm.startPrank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.setMaxSessionDuration(1 days);
        LibMarket.Pool memory pool = market.getPool(0);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.setPoolConfig(0, pool);
        vm.stopPrank();
    }

    function test_maxSessionDurationCapsSessions() public {
        vm.expectRevert(SessionFacet.SessionMaxDurationTooShort.selector);
        market.setMaxSessionDuration(299);
        market.setMaxSessionDuration(600);
        assertEq(market.getSessionEnd(10_000 * MOR, 1e10, uint128(NOW)), NOW + 600, "capped");
        bytes32 id = open(10_000 * MOR, false);
        assertEq(market.getSession(id).endsAt, NOW + 600, "session capped");
    }

    /// Values of the live schedule (Base mainnet pools), from an exact port of the live library.
    function test_emissionsMatchTheLiveScheduleAtKnownDates() public view {
        assertEq(market.getComputeBalance(JUNE_2024 + 5 hours), 388472808799551720000000, "compute, 2024-06-01");
        assertEq(market.totalMORSupply(JUNE_2024), 1230163894531913780000000, "others, 2024-06-01");
        assertEq(market.getComputeBalance(NOV_2025), 2135228575496050080000000, "compute, 2025-11-24");
        assertEq(market.totalMORSupply(NOV_2025 + 86399), 6761557155737491920000000, "others, 2025-11-24");
        assertEq(market.getComputeBalance(JUNE_2026), 2704585366167486120000000, "compute, 2026-06-01");
        assertEq(market.totalMORSupply(JUNE_2026), 8564520326197039380000000, "others, 2026-06-01");
        assertEq(market.getComputeBalance(YEAR_2045), 10079999999721449280000000, "compute, schedule over");
        assertEq(market.getComputeBalance(YEAR_2045 + 3650 days), 10079999999721449280000000, "no more after the end");
        assertEq(market.getTodaysBudget(NOV_2025), 2135228575496050080000000 / 100, "budget = 1% of the balance");
        // the first days: half a day on day 1 (the schedule starts at noon), then decreasing days
        assertEq(market.getComputeBalance(uint128(START + 12 hours)), 1728 * MOR, "day 1");
        assertEq(market.getComputeBalance(uint128(START + 36 hours)), 5183703720635880000000, "day 2");
    }

    function test_beforeThePayoutStartNothingIsEmittedAndSessionsAreTooShort() public {
        uint128 early = uint128(START - 2 days);
        assertEq(market.getComputeBalance(early), 0, "no balance");
        assertEq(market.totalMORSupply(early), 0, "no supply");
        assertEq(market.stakeToStipend(100 * MOR, early), 0, "no stipend");
        assertEq(market.stipendToStake(MOR, early), 0, "no stake");
        assertEq(market.getSessionEnd(100 * MOR, PRICE, early), early, "zero length");
        vm.warp(early);
        vm.expectRevert(SessionFacet.SessionTooShort.selector);
        this.openAs(100 * MOR);
    }

    function openAs(uint256 amount) external returns (bytes32) {
        return open(amount, false);
    }

    function test_startOfTheDay() public view {
        assertEq(market.startOfTheDay(uint128(NOW)), NOW - (NOW % 1 days), "midnight");
        assertEq(market.startOfTheDay(NOV_2025 + 1 days - 1), NOV_2025, "same day");
        assertEq(market.startOfTheDay(86400), 86400, "exact midnight");
        assertEq(market.startOfTheDay(86399), 0, "one second before");
    }

    function test_paidRewardsMoveFromTheBalanceToTheSupply() public {
        uint128 today = uint128(NOW);
        uint256 balance = market.getComputeBalance(today);
        uint256 supply = market.totalMORSupply(today);
        bytes32 id = open(depositFor(1 hours, PRICE), false);
        vm.warp(market.getSession(id).endsAt + 1);
        close(id, providerKey);
        uint256 paid = market.getProvidersTotalClaimed();
        assertTrue(paid > 0, "paid");
        assertEq(market.getComputeBalance(today), balance - paid, "balance less claims");
        assertEq(market.totalMORSupply(today), supply + paid, "supply plus claims");
    }

    function test_poolChangesApplyAtOnce() public {
        open(10 * MOR, false); // caches today's emissions
        uint256 before = market.getSessionEnd(100 * MOR, PRICE, uint128(NOW));
        LibMarket.Pool memory compute = market.getPool(3);
        compute.initialReward *= 2;
        compute.rewardDecrease *= 2;
        market.setPoolConfig(3, compute);
        assertEq(market.getPool(3).initialReward, 2 * 3456 * MOR, "stored");
        uint256 afterChange = market.getSessionEnd(100 * MOR, PRICE, uint128(NOW));
        assertTrue(afterChange - NOW > 2 * (before - NOW) - 2, "twice the compute pool, twice the stipend");
        vm.warp(NOW + 1);
        bytes32 id = open(100 * MOR, false);
        assertEq(market.getSession(id).endsAt, market.getSessionEnd(100 * MOR, PRICE, uint128(NOW + 1)), "sessions too");
    }

    /// Direct payment needs the deposit to cover the session: only reachable when stipends
    /// exceed stakes (a compute pool far larger than all others together).
    function test_directPaymentStakeTooLow() public {
        LibMarket.Pool memory tiny = LibMarket.Pool(1e6, 0, uint128(START), 1 days);
        for (uint256 i; i < 5; ++i) {
            if (i != 3) market.setPoolConfig(i, tiny);
        }
        assertTrue(market.stakeToStipend(MOR, uint128(NOW)) > MOR, "stipend above stake");
        bytes memory a = approval(bidId, user, NOW);
        bytes memory sig = signEth(providerKey, a);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionStakeTooLow.selector);
        market.openSession(user, MOR, true, a, sig);
        vm.prank(user);
        bytes32 id = market.openSession(user, MOR, false, a, sig); // the funding account pays
        assertEq(market.getSession(id).endsAt, NOW + 7 days, "the longest session");
    }

    function testFuzz_stipendIsTheStakeShareOfTodaysBudget(uint96 amount, uint32 day) public view {
        uint128 t = uint128(START + bound(day, 1, 6000) * 1 days);
        uint256 expected = (uint256(amount) * market.getComputeBalance(t)) / (market.totalMORSupply(t) * 100);
        assertEq(market.stakeToStipend(amount, t), expected, "stipend formula");
        uint256 stake = market.stipendToStake(expected, t);
        assertTrue(stake <= amount, "the inverse never gains");
    }

    function testFuzz_sessionEndFollowsTheStipend(uint96 amount, uint64 price, uint32 offset) public view {
        price = uint64(bound(price, 1e10, 1e16));
        uint128 t = uint128(NOW + offset);
        uint256 duration = market.stakeToStipend(amount, t) / price;
        if (duration > 7 days) duration = 7 days;
        assertEq(market.getSessionEnd(amount, price, t), t + duration, "end");
    }

    function testFuzz_startOfTheDay(uint128 t) public view {
        uint256 midnight = market.startOfTheDay(t);
        assertTrue(midnight <= t && t - midnight < 1 days && midnight % 1 days == 0, "midnight");
    }

    /// Any linear-decrease pool: the compute balance equals the schedule computed piecewise
    /// (a partial first interval, whole intervals, a partial last one), clipped at its end.
    function testFuzz_emissionMatchesThePiecewiseSchedule(
        uint80 initialReward,
        uint80 decrease,
        uint32 startOffset,
        uint32 interval,
        uint32 at
    ) public {
        LibMarket.Pool memory pool;
        pool.initialReward = bound(initialReward, 1, type(uint80).max);
        pool.rewardDecrease = bound(decrease, 0, pool.initialReward);
        pool.payoutStart = uint128(bound(startOffset, 1, 4000 days));
        pool.decreaseInterval = uint128(bound(interval, 1 days, 30 days));
        uint256 t = bound(at, 0, 6000 days);
        market.setPoolConfig(3, pool);
        uint256 midnight = t - (t % 1 days);
        assertEq(market.getComputeBalance(uint128(t)), piecewise(pool, midnight), "schedule");
    }

    function piecewise(LibMarket.Pool memory p, uint256 end) internal pure returns (uint256) {
        uint256 start = p.payoutStart;
        uint256 iv = p.decreaseInterval;
        if (p.rewardDecrease != 0) {
            uint256 last = start + ((p.initialReward + p.rewardDecrease - 1) / p.rewardDecrease) * iv;
            if (end > last) end = last;
        }
        if (end <= start) return 0;
        uint256 total;
        uint256 k; // interval index
        for (uint256 from = start; from < end; from += iv) {
            uint256 to = from + iv < end ? from + iv : end;
            if (k * p.rewardDecrease >= p.initialReward) break;
            uint256 reward = p.initialReward - k * p.rewardDecrease;
            total += to - from == iv ? reward : (reward * (to - from)) / iv;
            ++k;
            if (k > 200_000) revert("too many intervals for the oracle");
        }
        return total;
    }
}
