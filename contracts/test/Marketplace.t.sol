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

    function test_unknownSelectorRevertsClearly() public {
        vm.expectRevert(abi.encodeWithSelector(Diamond.FunctionDoesNotExist.selector, bytes4(0xdeadbeef)));
        (bool ok,) = address(market).call(hex"deadbeef");
        ok;
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
}
