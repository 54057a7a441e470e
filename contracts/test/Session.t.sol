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

    function test_naturalCloseHoldsTheUsedStakeUntilTheNextUtcDay() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, false);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt + 30); // same UTC day as endsAt (opened at 12:00 for about an hour)
        uint256 userBefore = token.balanceOf(user);
        uint256 providerBefore = token.balanceOf(provider);
        uint256 used = market.stipendToStake((endsAt - NOW) * PRICE, uint128(today()));
        close(id, providerKey);
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(available, 0, "nothing released yet");
        assertEq(hold, used, "the used stipend, as stake, held");
        assertTrue(hold > 0 && hold <= amount, "a real hold within the stake");
        assertEq(token.balanceOf(user) - userBefore, amount - used, "only the unused part back now");
        assertEq(token.balanceOf(provider) - providerBefore, (endsAt - NOW) * PRICE, "provider paid");
        vm.expectRevert(SessionFacet.SessionUserAmountToWithdrawIsZero.selector);
        this.withdrawAs();
        vm.warp(today() + 1 days);
        this.withdrawAs();
        assertEq(token.balanceOf(user) - userBefore, amount, "all back from the next UTC midnight");
        LibMarket.ProviderModelStats memory st = market.getProviderModelStats(modelId, provider);
        assertEq(st.successCount, 1, "success");
        assertEq(uint256(int256(st.tpsScaled1000.mean)), 15_000, "tps recorded");
        assertEq(market.getModelStats(modelId).count, 1, "model stats");
        assertTrue(!market.getSession(id).isActive, "closed");
        vm.expectRevert(SessionFacet.SessionAlreadyClosed.selector);
        this.closeAs(id);
    }

    function today() internal view returns (uint256) {
        return block.timestamp - (block.timestamp % 1 days);
    }

    function test_naturalCloseOnALaterDayThanTheEndHoldsNothing() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, false);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt - (endsAt % 1 days) + 1 days + 5); // just past the midnight after endsAt
        uint256 userBefore = token.balanceOf(user);
        close(id, providerKey);
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(available + hold, 0, "the day the stipend was drawn against is over: no entry");
        assertEq(token.balanceOf(user) - userBefore, amount, "whole stake back");
    }

    function test_naturalCloseAfterMidnightHoldsOnlyTheEndDaysUse() public {
        // opened at 23:00, about two hours long: it ends at about 01:00 the next day
        uint256 midnight = NOW - (NOW % 1 days) + 1 days;
        vm.warp(midnight - HOUR);
        uint256 amount = depositFor(2 * HOUR, PRICE);
        bytes32 id = open(amount, false);
        uint256 endsAt = market.getSession(id).endsAt;
        assertTrue(endsAt > midnight && endsAt < midnight + 1 days, "ends the next day");
        vm.warp(endsAt + 60);
        uint256 userBefore = token.balanceOf(user);
        uint256 used = market.stipendToStake((endsAt - midnight) * PRICE, uint128(midnight));
        close(id, providerKey);
        (, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(hold, used, "only the stipend used since midnight held");
        assertEq(token.balanceOf(user) - userBefore, amount - used, "yesterday's part back now");
    }

    function test_disputedNaturalClosePaysTheProviderInFull() public {
        // the provider side is unchanged: only an early dispute delays the provider's pay
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, false);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt + 30);
        uint256 providerBefore = token.balanceOf(provider);
        uint256 used = market.stipendToStake((endsAt - NOW) * PRICE, uint128(today()));
        close(id, userKey);
        assertEq(token.balanceOf(provider) - providerBefore, (endsAt - NOW) * PRICE, "paid in full");
        (, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(hold, used, "the user's used stake still held");
    }

    function testFuzz_closeHoldsTheUsedStakeOfTheDayTheSessionStopped(uint32 start, uint32 after_, bool direct, bool dispute)
        public
    {
        vm.warp(NOW + (uint256(start) % 1 days)); // open at any time of the day
        uint256 openedAt = block.timestamp;
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, direct);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(openedAt + (uint256(after_) % (3 days)) + 1);
        uint256 stopped = block.timestamp < endsAt ? block.timestamp : endsAt;
        uint256 stopDay = stopped - (stopped % 1 days);
        uint256 refund = amount - (direct ? (stopped - openedAt) * PRICE : 0);
        uint256 expected;
        if (block.timestamp < stopDay + 1 days) {
            uint256 since = openedAt > stopDay ? openedAt : stopDay;
            expected = market.stipendToStake((stopped - since) * PRICE, uint128(stopDay));
            if (expected > refund) expected = refund;
        }
        uint256 userBefore = token.balanceOf(user);
        close(id, dispute ? userKey : providerKey);
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(available, 0, "nothing released at close");
        assertEq(hold, expected, "held: the used stake of the day the session stopped, while it lasts");
        assertEq(token.balanceOf(user) - userBefore, refund - expected, "the rest back now");
        vm.warp(stopDay + 1 days);
        if (expected != 0) this.withdrawAs();
        assertEq(token.balanceOf(user) - userBefore, refund, "everything back from the next UTC day");
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
        (, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertTrue(hold > 0, "used stake held (closed on its end day)");
        assertEq(token.balanceOf(user) - userBefore + hold, market.getSession(id).stake, "user gets stake");
        assertEq(token.balanceOf(provider) - before, (endsAt - NOW) * PRICE, "not paid twice");
    }

    function test_directPaymentPaysTheProviderFromTheStake() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, true);
        uint256 endsAt = market.getSession(id).endsAt;
        vm.warp(endsAt + 5);
        uint256 userBefore = token.balanceOf(user);
        uint256 fundingBefore = token.balanceOf(admin);
        uint256 providerBefore = token.balanceOf(provider);
        uint256 earned = (endsAt - NOW) * PRICE;
        uint256 used = market.stipendToStake(earned, uint128(today()));
        uint256 expectedHold = used < amount - earned ? used : amount - earned;
        close(id, providerKey);
        (, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(hold, expectedHold, "direct payment: the used stake held too, within what is left");
        assertEq(token.balanceOf(user) - userBefore, amount - earned - hold, "stake less the pay and the hold");
        assertEq(token.balanceOf(provider) - providerBefore, earned, "paid from the stake");
        assertEq(token.balanceOf(admin), fundingBefore, "funding account untouched");
        vm.warp(today() + 1 days);
        this.withdrawAs();
        assertEq(token.balanceOf(user) - userBefore, amount - earned, "stake less the pay, next day");
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

    // ----- opening -----
    function test_sessionIdIsDerivedFromTheApproval() public {
        bytes32 id = open(10 * MOR, false);
        assertTrue(id == market.getSessionId(user, provider, bidId, NOW), "id = getSessionId(user, provider, bid, approval time)");
        assertTrue(id == keccak256(abi.encodePacked(user, provider, bidId, uint256(NOW))), "formula");
        assertTrue(!market.getIsProviderApprovalUsed(approval(bidId, user, NOW + 1)), "another approval unused");
    }

    function test_openEmitsAndRecordsTheSession() public {
        bytes memory a = approval(bidId, user, NOW);
        bytes memory sig = signEth(providerKey, a);
        bytes32 expected = market.getSessionId(user, provider, bidId, NOW);
        vm.expectEmit(address(market));
        emit SessionFacet.SessionOpened(user, expected, provider);
        vm.prank(user);
        market.openSession(user, 10 * MOR, true, a, sig);
        LibMarket.Session memory s = market.getSession(expected);
        assertTrue(s.bidId == bidId && s.isDirectPaymentFromUser && s.isActive, "fields");
        assertEq(s.openedAt, NOW, "opened");
        assertEq(s.closedAt, 0, "open");
        assertEq(s.closeoutType, 0, "no closeout");
        assertEq(market.getTotalSessions(provider), 1, "provider's sessions");
        assertEq(market.getSession(keccak256("none")).openedAt, 0, "unknown session is empty");
    }

    function test_openingForSomeoneElseIsRefused() public {
        bytes memory a = approval(bidId, user, NOW);
        bytes memory sig = signEth(providerKey, a);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, user, provider));
        market.openSession(user, 10 * MOR, false, a, sig);
    }

    function test_approvalsFromTheFutureAreAcceptedAsLive() public {
        bytes memory a = approval(bidId, user, NOW + 3600);
        bytes memory sig = signEth(providerKey, a);
        vm.prank(user);
        market.openSession(user, 10 * MOR, false, a, sig);
    }

    function test_malformedSignaturesAreRefused() public {
        bytes memory a = approval(bidId, user, NOW);
        bytes memory sig = signEth(providerKey, a);
        vm.startPrank(user);
        vm.expectRevert(bytes("ECDSA: invalid signature length"));
        market.openSession(user, 10 * MOR, false, a, slice(sig, 64));
        vm.expectRevert(bytes("ECDSA: invalid signature"));
        market.openSession(user, 10 * MOR, false, a, new bytes(65));
        vm.expectRevert(bytes("ECDSA: invalid signature"));
        market.openSession(user, 10 * MOR, false, a, highS(sig));
        vm.stopPrank();
        // a dispute still needs a valid signature from someone
        bytes32 id = open(10 * MOR, false);
        bytes memory r = receipt(id, NOW);
        vm.prank(user);
        vm.expectRevert(bytes("ECDSA: invalid signature"));
        market.closeSession(r, new bytes(65));
    }

    function slice(bytes memory b, uint256 n) internal pure returns (bytes memory out) {
        out = new bytes(n);
        for (uint256 i; i < n; ++i) {
            out[i] = b[i];
        }
    }

    /// The same signature with s mirrored into the upper half (valid maths, refused as malleable).
    function highS(bytes memory sig) internal pure returns (bytes memory) {
        (bytes32 r, bytes32 s) = abi.decode(slice(sig, 64), (bytes32, bytes32));
        uint8 v = uint8(sig[64]);
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        return abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }

    // ----- closing -----
    function test_closeChecksChainAndSession() public {
        bytes32 id = open(10 * MOR, false);
        bytes memory r = abi.encode(id, block.chainid + 1, uint128(NOW), uint32(1), uint32(1));
        bytes memory sig = signEth(providerKey, r);
        vm.prank(user);
        vm.expectRevert(SessionFacet.SessionReceiptForAnotherChainId.selector);
        market.closeSession(r, sig);
        r = receipt(keccak256("unknown"), NOW);
        sig = signEth(providerKey, r);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, address(0), user));
        market.closeSession(r, sig);
        vm.prank(user);
        vm.expectRevert();
        market.closeSession(slice(receipt(id, NOW), 150), sig); // too short to hold the five fields
    }

    function test_closeEmitsAndKeepsNoReceipt() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 100);
        vm.expectEmit(address(market));
        emit SessionFacet.SessionClosed(user, id, provider);
        close(id, providerKey);
        LibMarket.Session memory s = market.getSession(id);
        assertEq(s.closeoutReceipt.length, 0, "raw receipt not stored");
        assertEq(s.closedAt, NOW + 100, "closed at");
        assertTrue(!s.isActive && s.closeoutType == 0, "closed without dispute");
        assertEq(s.providerWithdrawnAmount, 100 * PRICE, "provider paid");
        assertEq(market.getProvidersTotalClaimed(), 100 * PRICE, "total claimed");
    }

    function test_closeNeedsTheFundingAccountsAllowance() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 100);
        token.approve(address(market), 0); // the funding account withdraws its allowance
        vm.expectRevert(bytes("ERC20: insufficient allowance"));
        this.closeAs(id);
        token.approve(address(market), type(uint256).max);
        this.closeAs(id);
    }

    function test_directEarlyCloseSplitsTheStake() public {
        uint256 amount = depositFor(HOUR, PRICE);
        bytes32 id = open(amount, true);
        vm.warp(NOW + 600);
        uint256 hold = market.stipendToStake(600 * PRICE, uint128(NOW - NOW % 1 days));
        uint256 userBefore = token.balanceOf(user);
        uint256 providerBefore = token.balanceOf(provider);
        uint256 fundingBefore = token.balanceOf(admin);
        close(id, providerKey);
        assertEq(token.balanceOf(provider) - providerBefore, 600 * PRICE, "paid from the stake");
        assertEq(token.balanceOf(user) - userBefore, amount - 600 * PRICE - hold, "the rest less today's hold");
        assertEq(token.balanceOf(admin), fundingBefore, "funding account untouched");
        (, uint256 held) = market.getUserStakesOnHold(user, 10);
        assertEq(held, hold, "held");
    }

    function test_directDisputePaysTodaysPartTomorrow() public {
        bytes32 id = open(depositFor(HOUR, PRICE), true);
        vm.warp(NOW + 600);
        uint256 before = token.balanceOf(provider);
        close(id, userKey);
        assertEq(token.balanceOf(provider), before, "today's part held");
        vm.warp(NOW - NOW % 1 days + 1 days);
        vm.prank(provider);
        market.claimForProvider(id);
        assertEq(token.balanceOf(provider) - before, 600 * PRICE, "paid from the diamond the next day");
    }

    function test_claimAfterAFullyPaidCloseIsANoOp() public {
        // the live contract panics here (on-hold subtracted from an already paid reward)
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 600);
        close(id, providerKey);
        uint256 before = token.balanceOf(provider);
        vm.startPrank(provider);
        market.claimForProvider(id);
        vm.warp(NOW + 2 days);
        market.claimForProvider(id);
        vm.stopPrank();
        assertEq(token.balanceOf(provider), before, "nothing more");
    }

    function test_onlyTheProviderClaims() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 2 hours);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, provider, user));
        market.claimForProvider(id);
    }

    function test_aDeregisteredProviderIsPaidWithinWhatItStillStakes() public {
        bytes32 id = open(depositFor(HOUR, PRICE), false);
        vm.startPrank(provider);
        market.deleteModelBid(bidId); // the session goes on
        market.providerDeregister(provider);
        vm.stopPrank();
        vm.warp(market.getSession(id).endsAt + 1);
        uint256 userBefore = token.balanceOf(user);
        uint256 before = token.balanceOf(provider);
        close(id, providerKey);
        assertEq(token.balanceOf(provider), before, "no stake left, nothing paid");
        (, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(token.balanceOf(user) - userBefore + hold, market.getSession(id).stake, "user made whole");
    }

    // ----- on-hold stakes -----
    function test_withdrawUserStakesTakesReleasedEntriesUpToIterations() public {
        // two early closes today, one tomorrow
        bytes32 a = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 100);
        close(a, providerKey);
        (, uint256 first) = market.getUserStakesOnHold(user, 10);
        vm.warp(NOW + 200);
        bytes32 b = open(depositFor(HOUR, PRICE), false);
        vm.warp(NOW + 300);
        close(b, providerKey);
        (, uint256 both) = market.getUserStakesOnHold(user, 10);
        uint256 second = both - first;
        assertTrue(first > 0 && second > 0, "two entries held");
        uint256 tomorrow = NOW - NOW % 1 days + 1 days;
        vm.warp(tomorrow + 10);
        bytes32 c = open(depositFor(HOUR, PRICE), false);
        vm.warp(tomorrow + 110);
        close(c, providerKey);
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertEq(available, first + second, "today's entries released");
        assertTrue(hold > 0, "tomorrow's entry held");
        (uint256 one,) = market.getUserStakesOnHold(user, 1);
        assertEq(one, second, "one iteration: the latest released entry");

        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, user, provider));
        market.withdrawUserStakes(user, 10);
        vm.startPrank(user);
        vm.expectRevert(SessionFacet.SessionUserAmountToWithdrawIsZero.selector);
        market.withdrawUserStakes(user, 0);
        uint256 before = token.balanceOf(user);
        vm.expectEmit(address(market));
        emit SessionFacet.UserWithdrawn(user, second);
        market.withdrawUserStakes(user, 1);
        market.withdrawUserStakes(user, 1);
        assertEq(token.balanceOf(user) - before, first + second, "both released entries paid");
        vm.expectRevert(SessionFacet.SessionUserAmountToWithdrawIsZero.selector);
        market.withdrawUserStakes(user, 10);
        vm.stopPrank();
        (available, hold) = market.getUserStakesOnHold(user, 10);
        assertTrue(available == 0 && hold > 0, "only tomorrow's left");
    }

    // ----- listings -----
    function test_sessionListsPageAcrossPackedWords() public {
        uint256 n = 20; // indexes are packed eight to a word: this crosses three words
        bytes32[] memory ids = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            vm.warp(NOW + i);
            ids[i] = open(10 * MOR, false);
        }
        for (uint256 offset; offset < n; offset += 7) {
            (bytes32[] memory page, uint256 total) = market.getUserSessions(user, offset, 7);
            (bytes32[] memory pp,) = market.getProviderSessions(provider, offset, 7);
            (bytes32[] memory mp,) = market.getModelSessions(modelId, offset, 7);
            assertEq(total, n, "total");
            for (uint256 i; i < page.length; ++i) {
                assertTrue(page[i] == ids[offset + i] && pp[i] == ids[offset + i] && mp[i] == ids[offset + i], "order");
            }
        }
        (bytes32[] memory none, uint256 all) = market.getUserSessions(user, n, 5);
        assertTrue(none.length == 0 && all == n, "past the end");
        assertEq(market.getTotalSessions(provider), n, "getTotalSessions");
        (, uint256 others) = market.getUserSessions(provider, 0, 5);
        assertEq(others, 0, "no sessions for others");
    }
}
