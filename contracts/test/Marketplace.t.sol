// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {LibMarket} from "../src/LibMarket.sol";
import {MarketplaceFacet} from "../src/MarketplaceFacet.sol";
import {Diamond} from "../src/Diamond.sol";

contract MarketplaceTest is Base {
    function test_deploysAtOneAddressWithTheConfiguredMarket() public view {
        assertEq(market.getBidFee(), MOR / 10, "bid fee");
        assertTrue(market.owner() == admin, "owner");
        (, uint256 models) = market.getActiveModelIds(0, 10);
        (, uint256 providers) = market.getActiveProviders(0, 10);
        assertEq(models, 1, "models");
        assertEq(providers, 1, "providers");
    }

    function test_adminFunctionsAreOwnerOnly() public {
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.setMarketplaceBidFee(1);
    }

    function test_providerStakeBelowMinimumReverts() public {
        address p = vm.addr(77);
        token.transfer(p, MOR);
        vm.startPrank(p);
        token.approve(address(market), MOR);
        vm.expectRevert(abi.encodeWithSelector(MarketplaceFacet.ProviderStakeTooLow.selector, MOR / 10, MOR / 5));
        market.providerRegister(p, MOR / 10, "x:1");
        vm.stopPrank();
    }

    function test_registerAgainUpdatesEndpointAndTopsUp() public {
        vm.prank(provider);
        market.providerRegister(provider, MOR, "10.0.0.1:4444");
        LibMarket.Provider memory p = market.getProvider(provider);
        assertEq(p.stake, 101 * MOR, "stake");
        assertTrue(keccak256(bytes(p.endpoint)) == keccak256("10.0.0.1:4444"), "endpoint");
    }

    function test_onlyTheProviderItselfCanRegister() public {
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, provider, admin));
        market.providerRegister(provider, 0, "x");
    }

    function test_deregisterNeedsNoActiveBidsAndReturnsStake() public {
        vm.prank(provider);
        vm.expectRevert(MarketplaceFacet.ProviderHasActiveBids.selector);
        market.providerDeregister(provider);
        uint256 before = token.balanceOf(provider);
        vm.startPrank(provider);
        market.deleteModelBid(bidId);
        market.providerDeregister(provider);
        vm.stopPrank();
        assertEq(token.balanceOf(provider) - before, 100 * MOR, "stake returned");
        (, uint256 total) = market.getActiveProviders(0, 10);
        assertEq(total, 0, "active providers");
    }

    function test_modelDeregisterRefusedWhileBidsExist() public {
        vm.expectRevert(MarketplaceFacet.ModelHasActiveBids.selector);
        market.modelDeregister(modelId);
        vm.prank(provider);
        market.deleteModelBid(bidId);
        uint256 before = token.balanceOf(admin);
        market.modelDeregister(modelId);
        assertEq(token.balanceOf(admin) - before, MOR / 10, "model stake returned");
        vm.expectRevert(MarketplaceFacet.ModelHasAlreadyDeregistered.selector);
        market.modelDeregister(modelId);
    }

    function test_bidPriceMustBeWithinBounds() public {
        vm.startPrank(provider);
        vm.expectRevert(MarketplaceFacet.MarketplaceBidPricePerSecondInvalid.selector);
        market.postModelBid(provider, modelId, 1e9);
        vm.expectRevert(MarketplaceFacet.MarketplaceBidPricePerSecondInvalid.selector);
        market.postModelBid(provider, modelId, 1e17);
        vm.stopPrank();
    }

    function test_rebidReplacesThePreviousBidAndChargesTheFee() public {
        uint256 fees = market.getFeeBalance();
        uint256 before = token.balanceOf(provider);
        vm.prank(provider);
        bytes32 second = market.postModelBid(provider, modelId, 2 * PRICE);
        assertEq(before - token.balanceOf(provider), MOR / 10, "fee paid");
        assertEq(market.getFeeBalance() - fees, MOR / 10, "fee kept");
        (bytes32[] memory active, uint256 total) = market.getModelActiveBids(modelId, 0, 10);
        assertEq(total, 1, "one active bid");
        assertTrue(active[0] == second, "new bid active");
        assertTrue(market.getBid(bidId).deletedAt != 0, "old bid deleted");
        (, uint256 all) = market.getModelBids(modelId, 0, 10);
        assertEq(all, 2, "history keeps both");
    }

    function test_postingOnUnknownModelOrAsUnknownProviderReverts() public {
        vm.prank(provider);
        vm.expectRevert(MarketplaceFacet.MarketplaceModelNotFound.selector);
        market.postModelBid(provider, keccak256("nope"), PRICE);
        address stranger = vm.addr(99);
        vm.prank(stranger);
        vm.expectRevert(MarketplaceFacet.MarketplaceProviderNotFound.selector);
        market.postModelBid(stranger, modelId, PRICE);
    }

    function test_listingsPage() public {
        for (uint256 i; i < 5; ++i) {
            registerProvider(vm.addr(1000 + i), MOR, modelId, PRICE + i);
        }
        (bytes32[] memory page, uint256 total) = market.getModelActiveBids(modelId, 4, 2);
        assertEq(total, 6, "total");
        assertEq(page.length, 2, "page");
        (page,) = market.getModelActiveBids(modelId, 10, 2);
        assertEq(page.length, 0, "past the end");
    }

    function testFuzz_bidPriceBounds(uint256 price) public {
        vm.prank(provider);
        if (price < 1e10 || price > 1e16) {
            vm.expectRevert(MarketplaceFacet.MarketplaceBidPricePerSecondInvalid.selector);
            market.postModelBid(provider, modelId, price);
        } else {
            bytes32 id = market.postModelBid(provider, modelId, price);
            assertEq(market.getBid(id).pricePerSecond, price, "price stored");
        }
    }

    // ----- administration -----
    function test_priceBoundsSetterChecksAndEmits() public {
        vm.expectRevert(MarketplaceFacet.MarketplaceBidMinPricePerSecondIsZero.selector);
        market.setMinMaxBidPricePerSecond(0, 1);
        vm.expectRevert(MarketplaceFacet.MarketplaceBidMinPricePerSecondIsInvalid.selector);
        market.setMinMaxBidPricePerSecond(2, 1);
        vm.expectEmit(address(market));
        emit MarketplaceFacet.MarketplaceBidMinMaxPriceUpdated(5, 5);
        market.setMinMaxBidPricePerSecond(5, 5);
        (uint256 lo, uint256 hi) = market.getMinMaxBidPricePerSecond();
        assertTrue(lo == 5 && hi == 5, "bounds stored");
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.setMinMaxBidPricePerSecond(1, 2);
    }

    function test_feeAndMinimumStakeSettersEmit() public {
        vm.expectEmit(address(market));
        emit MarketplaceFacet.MaretplaceFeeUpdated(7);
        market.setMarketplaceBidFee(7);
        assertEq(market.getBidFee(), 7, "fee");
        vm.expectEmit(address(market));
        emit MarketplaceFacet.ProviderMinimumStakeUpdated(8);
        market.providerSetMinStake(8);
        assertEq(market.getProviderMinimumStake(), 8, "provider minimum");
        vm.expectEmit(address(market));
        emit MarketplaceFacet.ModelMinimumStakeUpdated(9);
        market.modelSetMinStake(9);
        assertEq(market.getModelMinimumStake(), 9, "model minimum");
        vm.startPrank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.providerSetMinStake(1);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.modelSetMinStake(1);
        vm.stopPrank();
    }

    function test_withdrawFeePaysAtMostTheBalance() public {
        address treasury = vm.addr(0x7EA);
        uint256 fees = market.getFeeBalance();
        assertEq(fees, MOR / 10, "one bid fee collected");
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.withdrawFee(treasury, 1);
        vm.expectRevert(MarketplaceFacet.MarketplaceFeeAmountIsZero.selector);
        market.withdrawFee(treasury, 0);
        market.withdrawFee(treasury, 1);
        market.withdrawFee(treasury, type(uint256).max); // the rest, as live: min(amount, balance)
        assertEq(token.balanceOf(treasury), fees, "all fees paid");
        assertEq(market.getFeeBalance(), 0, "none left");
        vm.expectRevert(MarketplaceFacet.MarketplaceFeeAmountIsZero.selector);
        market.withdrawFee(treasury, 1);
    }

    // ----- providers -----
    function test_newProviderRecordAndEvent() public {
        address p = vm.addr(0x1234);
        token.transfer(p, MOR);
        vm.startPrank(p);
        token.approve(address(market), MOR);
        vm.expectEmit(address(market));
        emit MarketplaceFacet.ProviderRegistered(p);
        market.providerRegister(p, MOR / 2, "host:1");
        vm.stopPrank();
        LibMarket.Provider memory rec = market.getProvider(p);
        assertEq(rec.stake, MOR / 2, "stake");
        assertEq(rec.createdAt, NOW, "created");
        assertEq(rec.limitPeriodEnd, NOW + 365 days, "limit period");
        assertEq(rec.limitPeriodEarned, 0, "earned");
        assertTrue(!rec.isDeleted && market.getIsProviderActive(p), "active");
        assertTrue(keccak256(bytes(rec.endpoint)) == keccak256("host:1"), "endpoint");
        assertEq(token.balanceOf(p), MOR / 2, "stake pulled");
        assertTrue(!market.getIsProviderActive(vm.addr(0x4321)), "unknown is inactive");
        assertEq(market.getProvider(vm.addr(0x4321)).createdAt, 0, "unknown is empty");
    }

    function test_deregisterChecks() public {
        vm.prank(user);
        vm.expectRevert(MarketplaceFacet.ProviderNotFound.selector);
        market.providerDeregister(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, provider, admin));
        market.providerDeregister(provider);
        vm.startPrank(provider);
        market.deleteModelBid(bidId);
        vm.expectEmit(address(market));
        emit MarketplaceFacet.ProviderDeregistered(provider);
        market.providerDeregister(provider);
        vm.expectRevert(MarketplaceFacet.ProviderHasAlreadyDeregistered.selector);
        market.providerDeregister(provider);
        vm.stopPrank();
        LibMarket.Provider memory rec = market.getProvider(provider);
        assertTrue(rec.isDeleted && rec.stake == 0 && !market.getIsProviderActive(provider), "deleted");
    }

    function test_reRegisteringADeregisteredProviderKeepsItsHistory() public {
        vm.startPrank(provider);
        market.deleteModelBid(bidId);
        market.providerDeregister(provider);
        vm.warp(NOW + 10 days);
        vm.expectRevert(abi.encodeWithSelector(MarketplaceFacet.ProviderStakeTooLow.selector, 0, MOR / 5));
        market.providerRegister(provider, 0, "again:1");
        market.providerRegister(provider, MOR, "again:1");
        vm.stopPrank();
        LibMarket.Provider memory rec = market.getProvider(provider);
        assertTrue(!rec.isDeleted && market.getIsProviderActive(provider), "active again");
        assertEq(rec.createdAt, NOW, "created once");
        assertEq(rec.stake, MOR, "new stake");
        (, uint256 total) = market.getActiveProviders(0, 10);
        assertEq(total, 1, "listed once");
    }

    function test_deregisterKeepsWhatWasEarnedThisPeriod() public {
        // earn 0.36 MOR through a session, then deregister: the earned part stays staked
        bytes memory a = approval(bidId, user, NOW);
        bytes memory sig = signEth(providerKey, a);
        uint256 amount = depositFor(1 hours, PRICE);
        vm.prank(user);
        bytes32 id = market.openSession(user, amount, false, a, sig);
        vm.warp(market.getSession(id).endsAt + 1);
        close(id, providerKey);
        uint256 earned = market.getProvider(provider).limitPeriodEarned;
        assertTrue(earned > 0, "earned");
        uint256 before = token.balanceOf(provider);
        vm.startPrank(provider);
        market.deleteModelBid(bidId);
        market.providerDeregister(provider);
        vm.stopPrank();
        assertEq(token.balanceOf(provider) - before, 100 * MOR - earned, "stake less this period's earnings");
        assertEq(market.getProvider(provider).stake, earned, "earned part locked");
        // after the period, re-register and deregister again to get the rest
        vm.warp(NOW + 366 days);
        vm.startPrank(provider);
        market.providerRegister(provider, MOR, "back:1");
        market.providerDeregister(provider);
        vm.stopPrank();
        assertEq(token.balanceOf(provider) - before, 100 * MOR, "all back after the period");
    }

    // ----- models -----
    function test_modelRecordEventAndUpdate() public {
        string[] memory tags = new string[](2);
        tags[0] = "a";
        tags[1] = "b";
        bytes32 id = market.getModelId(admin, keccak256("base"));
        assertTrue(id == keccak256(abi.encodePacked(admin, keccak256("base"))), "model id formula");
        vm.expectEmit(address(market));
        emit MarketplaceFacet.ModelRegisteredUpdated(admin, id);
        market.modelRegister(admin, keccak256("base"), bytes32(uint256(1)), 5, MOR / 10, "first", tags);
        LibMarket.Model memory m = market.getModel(id);
        assertTrue(m.ipfsCID == bytes32(uint256(1)) && m.fee == 5 && m.owner == admin, "fields");
        assertEq(m.stake, MOR / 10, "stake");
        assertEq(m.createdAt, NOW, "created");
        assertTrue(m.tags.length == 2 && keccak256(bytes(m.tags[1])) == keccak256("b"), "tags");
        assertTrue(market.getIsModelActive(id) && !m.isDeleted, "active");

        vm.warp(NOW + 1 days);
        string[] memory none = new string[](0);
        market.modelRegister(admin, keccak256("base"), bytes32(uint256(2)), 6, MOR, "second", none);
        m = market.getModel(id);
        assertTrue(keccak256(bytes(m.name)) == keccak256("second") && m.tags.length == 0, "overwritten");
        assertEq(m.stake, MOR / 10 + MOR, "topped up");
        assertEq(m.createdAt, NOW, "created once");
        (, uint256 all) = market.getModelIds(0, 10);
        assertEq(all, 2, "two models ever");
    }

    function test_modelStakeAndOwnershipChecks() public {
        string[] memory none = new string[](0);
        vm.expectRevert(abi.encodeWithSelector(MarketplaceFacet.ModelStakeTooLow.selector, 1, MOR / 10));
        market.modelRegister(admin, keccak256("x"), bytes32(0), 0, 1, "x", none);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, user, admin));
        market.modelRegister(user, keccak256("x"), bytes32(0), 0, MOR, "x", none);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, admin, user));
        market.modelDeregister(modelId);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, address(0), admin));
        market.modelDeregister(keccak256("unknown"));
    }

    function test_deregisteredModelLeavesTheActiveListOnly() public {
        vm.prank(provider);
        market.deleteModelBid(bidId);
        vm.expectEmit(address(market));
        emit MarketplaceFacet.ModelDeregistered(admin, modelId);
        market.modelDeregister(modelId);
        (, uint256 active) = market.getActiveModelIds(0, 10);
        (bytes32[] memory all, uint256 total) = market.getModelIds(0, 10);
        assertEq(active, 0, "not active");
        assertTrue(total == 1 && all[0] == modelId, "still known");
        assertTrue(!market.getIsModelActive(modelId), "inactive");
        vm.prank(provider);
        vm.expectRevert(MarketplaceFacet.MarketplaceModelNotFound.selector);
        market.postModelBid(provider, modelId, PRICE);
        // registering again revives it (the stake must meet the minimum again)
        string[] memory none = new string[](0);
        market.modelRegister(admin, keccak256(bytes("llama-3.3-70b")), bytes32(0), 0, MOR / 10, "llama-3.3-70b", none);
        assertTrue(market.getIsModelActive(modelId), "active again");
    }

    // ----- bids -----
    function test_bidRecordIdsAndEvent() public {
        LibMarket.Bid memory b = market.getBid(bidId);
        assertTrue(b.provider == provider && b.modelId == modelId, "fields");
        assertEq(b.pricePerSecond, PRICE, "price");
        assertEq(b.nonce, 0, "first nonce");
        assertEq(b.createdAt, NOW, "created");
        assertEq(b.deletedAt, 0, "live");
        assertTrue(bidId == keccak256(abi.encodePacked(provider, modelId, uint256(0))), "bid id formula");
        assertTrue(market.getBidId(provider, modelId, 0) == bidId, "getBidId");
        assertTrue(market.getProviderModelId(provider, modelId) == keccak256(abi.encodePacked(provider, modelId)), "pair id");
        assertTrue(market.isBidActive(bidId) && !market.isBidActive(keccak256("x")), "isBidActive");

        vm.prank(provider);
        vm.expectEmit(address(market));
        emit MarketplaceFacet.MarketplaceBidDeleted(provider, modelId, 0);
        emit MarketplaceFacet.MarketplaceBidPosted(provider, modelId, 1);
        bytes32 second = market.postModelBid(provider, modelId, PRICE);
        assertTrue(second == market.getBidId(provider, modelId, 1), "nonce 1");
        assertTrue(!market.isBidActive(bidId), "replaced");
    }

    function test_deleteBidChecks() public {
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, provider, admin));
        market.deleteModelBid(bidId);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, address(0), admin));
        market.deleteModelBid(keccak256("unknown"));
        vm.startPrank(provider);
        vm.expectEmit(address(market));
        emit MarketplaceFacet.MarketplaceBidDeleted(provider, modelId, 0);
        market.deleteModelBid(bidId);
        vm.expectRevert(MarketplaceFacet.MarketplaceActiveBidNotFound.selector);
        market.deleteModelBid(bidId);
        // bidding again after a manual delete works (the live audit's H-1)
        bytes32 again = market.postModelBid(provider, modelId, PRICE);
        vm.stopPrank();
        assertTrue(market.isBidActive(again), "bid again");
        assertEq(market.getBid(bidId).deletedAt, NOW, "deleted at");
    }

    function test_bidAsSomeoneElseOrWhenDeregisteredIsRefused() public {
        vm.expectRevert(abi.encodeWithSelector(LibMarket.InsufficientRightsForOperation.selector, provider, admin));
        market.postModelBid(provider, modelId, PRICE);
        vm.startPrank(provider);
        market.deleteModelBid(bidId);
        market.providerDeregister(provider);
        vm.expectRevert(MarketplaceFacet.MarketplaceProviderNotFound.selector);
        market.postModelBid(provider, modelId, PRICE);
        vm.stopPrank();
    }

    function test_providerAndModelBidListings() public {
        bytes32 other = registerModel("other");
        vm.startPrank(provider);
        bytes32 b2 = market.postModelBid(provider, other, PRICE);
        bytes32 b3 = market.postModelBid(provider, modelId, PRICE); // replaces bidId
        vm.stopPrank();
        (bytes32[] memory all, uint256 total) = market.getProviderBids(provider, 0, 10);
        assertTrue(total == 3 && all[0] == bidId && all[1] == b2 && all[2] == b3, "provider history");
        (bytes32[] memory active, uint256 activeTotal) = market.getProviderActiveBids(provider, 0, 10);
        assertEq(activeTotal, 2, "two active");
        assertTrue((active[0] == b2 && active[1] == b3) || (active[0] == b3 && active[1] == b2), "active set");
        (all, total) = market.getModelBids(modelId, 1, 10);
        assertTrue(total == 2 && all.length == 1 && all[0] == b3, "model history page");
        (active, activeTotal) = market.getModelActiveBids(other, 0, 0);
        assertTrue(activeTotal == 1 && active.length == 0, "limit 0 gives the total only");
    }

    function test_delegationIsNotAvailable() public view {
        assertTrue(!market.isRightsDelegated(user, provider, market.DELEGATION_RULES_SESSION()), "no delegation");
        assertTrue(market.getRegistry() == address(0), "no registry");
        assertTrue(market.DELEGATION_RULES_PROVIDER() == keccak256("delegation.rules.provider"), "provider rule");
        assertTrue(market.DELEGATION_RULES_MODEL() == keccak256("delegation.rules.model"), "model rule");
        assertTrue(market.DELEGATION_RULES_MARKETPLACE() == keccak256("delegation.rules.marketplace"), "market rule");
        assertTrue(market.getToken() == address(token), "token");
    }

    function testFuzz_pagesMatchTheList(uint8 count, uint8 offset, uint8 limit) public {
        count = uint8(bound(count, 0, 12));
        for (uint256 i; i < count; ++i) {
            registerProvider(vm.addr(5000 + i), MOR, modelId, PRICE);
        }
        (address[] memory everyone, uint256 total) = market.getActiveProviders(0, type(uint256).max);
        assertEq(total, uint256(count) + 1, "total");
        (address[] memory page, uint256 total2) = market.getActiveProviders(offset, limit);
        assertEq(total2, total, "total on every page");
        uint256 expected = offset >= total ? 0 : (total - offset < limit ? total - offset : limit);
        assertEq(page.length, expected, "page length");
        for (uint256 i; i < page.length; ++i) {
            assertTrue(page[i] == everyone[offset + i], "page item");
        }
    }
}
