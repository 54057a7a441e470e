// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {LibMarket} from "../src/LibMarket.sol";
import {SessionFacet} from "../src/SessionFacet.sol";

contract SessionTest is Base {
    uint256 internal constant HOUR = 1 hours;

    function test_openSessionLastsWhatTheStakeBuys() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, false);
        LibMarket.Session memory s = market.getSession(id);
        assertTrue(s.user == user && s.isActive && !s.isDirectPaymentFromUser, "session fields");
        assertEq(s.stake, amount, "stake escrowed");
        assertEq(s.endsAt, market.getSessionEnd(amount, PRICE, uint128(NOW)), "ends by the maths");
        assertTrue(s.endsAt >= NOW + HOUR, "at least the hour asked");
        assertEq(token.balanceOf(address(market)) >= amount ? 1 : 0, 1, "diamond holds the stake");
        (bytes32[] memory mine,) = market.getUserSessions(user, 0, 10);
        (bytes32[] memory theirs,) = market.getProviderSessions(provider, 0, 10);
        (bytes32[] memory model,) = market.getModelSessions(modelId, 0, 10);
        assertTrue(mine[0] == id && theirs[0] == id && model[0] == id, "listed three ways");
        assertTrue(market.getIsProviderApprovalUsed(approval(bidId, user, NOW)), "approval used");
    }

    function test_stipendIsAboutPoint316PercentOfStake() public view {
        uint256 stipend = market.stakeToStipend(100 * MOR, uint128(NOW));
        // compute pool / (other pools x 100) = 6 / 1900 with the mainnet pools
        assertTrue(stipend > 0.315 ether && stipend < 0.317 ether, "0.316% of stake");
        uint256 back = market.stipendToStake(stipend, uint128(NOW));
        assertTrue(back <= 100 * MOR && 100 * MOR - back < 1e6, "inverse");
    }

    function test_approvalMustBeForThisUserChainAndFresh() public {
        bytes memory forOther = approval(bidId, provider, NOW);
        bytes memory sig = signEth(providerKey, forOther);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionApprovedForAnotherUser.selector);
        market.openSession(user, 10 * MOR, false, forOther, sig);

        bytes memory otherChain = abi.encode(bidId, block.chainid + 1, user, uint128(NOW));
        sig = signEth(providerKey, otherChain);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionApprovedForAnotherChainId.selector);
        market.openSession(user, 10 * MOR, false, otherChain, sig);

        bytes memory stale = approval(bidId, user, NOW - 601);
        sig = signEth(providerKey, stale);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionApproveExpired.selector);
        market.openSession(user, 10 * MOR, false, stale, sig);

        // Live routers sign in milliseconds: understood, and the TTL still applies.
        bytes memory staleMs = approval(bidId, user, (NOW - 601) * 1000);
        sig = signEth(providerKey, staleMs);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionApproveExpired.selector);
        market.openSession(user, 10 * MOR, false, staleMs, sig);
        bytes memory freshMs = approval(bidId, user, NOW * 1000);
        sig = signEth(providerKey, freshMs);
        vm.prank(user);
        market.openSession(user, 10 * MOR, false, freshMs, sig);
    }

    function test_approvalMustBeSignedByTheProviderAndUsedOnce() public {
        bytes memory a = approval(bidId, user, NOW);
        bytes memory forged = signEth(userKey, a);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionProviderSignatureMismatch.selector);
        market.openSession(user, 10 * MOR, false, a, forged);
        bytes memory sig = signEth(providerKey, a);
        vm.prank(user);
        market.openSession(user, 10 * MOR, false, a, sig);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionDuplicateApproval.selector);
        market.openSession(user, 10 * MOR, false, a, sig);
    }

    function test_tooSmallDepositAndDeletedBidAreRefused() public {
        vm.expectRevert(SessionFacet.SessionTooShort.selector);
        this.openAs(MOR / 2); // 0.5 MOR buys about 158 s at 1e13 wei/s: under the 300 s minimum
        vm.prank(provider);
        market.deleteModelBid(bidId);
        vm.expectRevert(SessionFacet.SessionBidNotFound.selector);
        this.openAs(10 * MOR);
    }

    function openAs(uint256 amount) external returns (bytes32) {
        return open(amount, false);
    }

    function test_naturalCloseReturnsEverythingAndPaysTheProvider() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, false);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt + 30);
        uint256 userBefore = token.balanceOf(user);
        uint256 providerBefore = token.balanceOf(provider);
        close(id, providerKey);
        assertEq(token.balanceOf(user) - userBefore, amount, "whole stake back");
        assertEq(token.balanceOf(provider) - providerBefore, (endsAt - NOW) * PRICE, "provider paid");
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(available + hold, 0, "nothing on hold");
        LibMarket.ProviderModelStats memory st = market.getProviderModelStats(modelId, provider);
        assertEq(st.successCount, 1, "success");
        assertEq(uint256(int256(st.tpsScaled1000.mean)), 15_000, "tps recorded");
        assertEq(market.getModelStats(modelId).count, 1, "model stats");
        assertTrue(!market.getSession(id).isActive, "closed");
        vm.expectRevert(SessionFacet.SessionAlreadyClosed.selector);
        this.closeAs(id);
    }

    function closeAs(bytes32 id) external {
        close(id, providerKey);
    }

    function test_earlyCloseHoldsTodaysStipendUntilTomorrow() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, false);
        vm.warp(NOW + 600);
        uint256 userBefore = token.balanceOf(user);
        uint256 providerBefore = token.balanceOf(provider);
        uint256 expectedHold = market.stipendToStake(600 * PRICE, uint128(NOW - NOW % 1 days));
        close(id, providerKey);
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(available, 0, "nothing released yet");
        assertEq(hold, expectedHold, "today's use held");
        assertEq(token.balanceOf(user) - userBefore + hold, amount, "rest returned now");
        assertEq(token.balanceOf(provider) - providerBefore, 600 * PRICE, "provider paid in full");
        vm.expectRevert(SessionFacet.SessionUserAmountToWithdrawIsZero.selector);
        this.withdrawAs();
        vm.warp(NOW - NOW % 1 days + 1 days);
        this.withdrawAs();
        assertEq(token.balanceOf(user) - userBefore, amount, "all back after midnight");
    }

    function withdrawAs() external {
        vm.prank(user);
        market.withdrawUserStakes(user, 10);
    }

    function test_disputeDelaysTodaysPayAndSkipsStats() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 600);
        uint256 providerBefore = token.balanceOf(provider);
        close(id, userKey); // user-signed receipt: a dispute
        assertEq(token.balanceOf(provider) - providerBefore, 0, "today's part held");
        assertEq(market.getSession(id).closeoutType, 1, "disputed");
        LibMarket.ProviderModelStats memory st = market.getProviderModelStats(modelId, provider);
        assertEq(st.totalCount, 1, "counted");
        assertEq(st.successCount, 0, "not a success");
        vm.prank(provider);
        market.claimForProvider(id); // same day: nothing yet, and no panic
        assertEq(token.balanceOf(provider) - providerBefore, 0, "still held");
        vm.warp(NOW - NOW % 1 days + 1 days);
        vm.prank(provider);
        market.claimForProvider(id);
        assertEq(token.balanceOf(provider) - providerBefore, 600 * PRICE, "paid the next day");
        vm.prank(provider);
        market.claimForProvider(id); // nothing left: a no-op
        assertEq(token.balanceOf(provider) - providerBefore, 600 * PRICE, "paid once");
    }

    function test_claimBeforeTheEndPaysNothing() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        uint256 before = token.balanceOf(provider);
        vm.prank(provider);
        market.claimForProvider(id); // running: nothing is claimable yet, a no-op as on the live network
        assertEq(token.balanceOf(provider), before, "nothing paid");
        assertEq(market.getSession(id).providerWithdrawnAmount, 0, "nothing withdrawn");
        vm.prank(provider);
        vm.expectRevert(SessionFacet.SessionNotEndedOrNotExist.selector);
        market.claimForProvider(keccak256("no such session"));
    }

    function test_unclosedSessionIsClaimableAfterItsEnd() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt + 1);
        uint256 before = token.balanceOf(provider);
        vm.prank(provider);
        market.claimForProvider(id);
        assertEq(token.balanceOf(provider) - before, (endsAt - NOW) * PRICE, "claimed");
        uint256 userBefore = token.balanceOf(user);
        close(id, providerKey);
        assertEq(token.balanceOf(user) - userBefore, market.getSession(id).stake, "user gets stake");
        assertEq(token.balanceOf(provider) - before, (endsAt - NOW) * PRICE, "not paid twice");
    }

    function test_directPaymentPaysTheProviderFromTheStake() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, true);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt + 5);
        uint256 userBefore = token.balanceOf(user);
        uint256 fundingBefore = token.balanceOf(admin);
        close(id, providerKey);
        uint256 earned = (endsAt - NOW) * PRICE;
        assertEq(token.balanceOf(user) - userBefore, amount - earned, "stake less the pay");
        assertEq(token.balanceOf(admin), fundingBefore, "funding account untouched");
    }

    function test_providerPayIsCappedByItsStakePerPeriod() public {
        address small = vm.addr(0x5A11);
        bytes32 smallBid = registerProvider(small, MOR / 5, modelId, 1e16);
        bytes memory a = approval(smallBid, user, NOW);
        bytes memory sig = signEth(0x5A11, a);
        uint256 amount = depositFor(600, 1e16);
        vm.prank(user);
        bytes32 id = market.openSession(user, amount, false, a, sig);
        vm.warp(market.getSession(id).endsAt + 1);
        uint256 before = token.balanceOf(small);
        close(id, 0x5A11);
        assertEq(token.balanceOf(small) - before, MOR / 5, "capped at the stake");
        vm.warp(NOW + 366 days);
        vm.prank(small);
        market.claimForProvider(id);
        assertTrue(token.balanceOf(small) - before > MOR / 5, "more after the period resets");
    }

    function test_receiptWithTokenFieldsAndMillisecondsIsAccepted() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 900);
        bytes memory r = abi.encode(id, block.chainid, uint128(block.timestamp * 1000), uint32(9000), uint32(120), uint32(50), uint32(400));
        bytes memory sig = signEth(providerKey, r);
        vm.prank(user);
        market.closeSession(r, sig);
        assertEq(market.getProviderModelStats(modelId, provider).successCount, 1, "accepted");
    }

    function test_expiredOrForeignReceiptIsRefused() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 2000);
        bytes memory old = receipt(id, NOW + 1000);
        bytes memory sig = signEth(providerKey, old);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionReceiptExpired.selector);
        market.closeSession(old, sig);
        bytes memory r = receipt(id, block.timestamp);
        sig = signEth(providerKey, r);
        vm.prank(provider); // only the user closes
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, user, provider));
        market.closeSession(r, sig);
    }

    function testFuzz_sessionEndNeverExceedsTheMaximum(uint96 amount, uint64 price) public view {
        vm.assume(price >= 1e10);
        uint256 end = market.getSessionEnd(amount, price, uint128(NOW));
        assertTrue(end >= NOW && end <= NOW + 7 days, "within max duration");
    }

    function testFuzz_stipendRoundTripNeverGainsStake(uint96 amount) public view {
        uint256 stipend = market.stakeToStipend(amount, uint128(NOW));
        assertTrue(market.stipendToStake(stipend, uint128(NOW)) <= amount, "no free stake");
    }

    function testFuzz_closeAtAnyTimeConservesMor(uint32 after_, bool direct, bool dispute) public {
        uint256 supply = token.totalSupply();
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, direct);
        vm.warp(NOW + (uint256(after_) % (3 days)) + 1);
        uint256 userBefore = token.balanceOf(user);
        close(id, dispute ? userKey : providerKey);
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 100);
        uint256 paid = market.getSession(id).providerWithdrawnAmount;
        uint256 back = token.balanceOf(user) - userBefore + available + hold;
        if (direct) assertTrue(back + paid <= amount, "direct: refund plus pay within stake");
        else assertEq(back, amount, "staking: the whole stake comes back");
        assertEq(token.totalSupply(), supply, "supply constant");
    }
}
