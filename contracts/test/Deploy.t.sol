// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base, IMarket} from "./Base.sol";
import {LibMarket} from "../src/LibMarket.sol";
import {Diamond} from "../src/Diamond.sol";
import {MarketplaceFacet} from "../src/MarketplaceFacet.sol";
import {SessionFacet} from "../src/SessionFacet.sol";
import {MorpheusToken} from "../src/MorpheusToken.sol";
import {Multicall3} from "../src/Multicall3.sol";

/// The deploy interface the Python sandbox uses, exactly: creation code of each contract,
/// Multicall3's runtime code placed at its canonical address (anvil_setCode), facets without
/// constructor arguments, Diamond(owner, cuts), then the inits and setters through the diamond,
/// and the funding account's MOR approval.
contract DeployTest is Base {
    address internal constant MULTICALL3 = 0xcA11bde05977b3631167028862bE2a173976CA11;
    address internal deployer = vm.addr(0xDE9);

    function setUp() public override {
        vm.warp(NOW);
        provider = vm.addr(providerKey);
        user = vm.addr(userKey);
    }

    function create(bytes memory code) internal returns (address deployed) {
        assembly {
            deployed := create(0, add(code, 32), mload(code))
        }
        require(deployed != address(0), "create failed");
    }

    function deployAsTheSandbox() internal returns (address diamond) {
        vm.startPrank(deployer);
        token = MorpheusToken(create(abi.encodePacked(vm.getCode("MorpheusToken.sol:MorpheusToken"), abi.encode(1e8 * MOR))));
        vm.etch(MULTICALL3, vm.getDeployedCode("Multicall3.sol:Multicall3"));
        Diamond.FacetCut[] memory cuts = new Diamond.FacetCut[](2);
        cuts[0] = Diamond.FacetCut(create(vm.getCode("MarketplaceFacet.sol:MarketplaceFacet")), facetSelectors("MarketplaceFacet"));
        cuts[1] = Diamond.FacetCut(create(vm.getCode("SessionFacet.sol:SessionFacet")), facetSelectors("SessionFacet"));
        diamond = create(abi.encodePacked(vm.getCode("Diamond.sol:Diamond"), abi.encode(deployer, cuts)));
        IMarket m = IMarket(diamond);
        m.__Marketplace_init(address(token), 1e10, 1e16);
        m.__SessionRouter_init(deployer, 7 days, mainnetPools());
        m.setMarketplaceBidFee(MOR / 10);
        m.providerSetMinStake(MOR / 5);
        m.modelSetMinStake(MOR / 10);
        token.approve(diamond, type(uint256).max); // the funding account pays staking-mode rewards
        token.transfer(provider, 1_000 * MOR);
        token.transfer(user, 1_000 * MOR);
        vm.stopPrank();
    }

    function test_deploysExactlyAsTheSandboxDoesAndRunsASession() public {
        market = IMarket(deployAsTheSandbox());
        assertTrue(market.owner() == deployer, "owner");
        assertTrue(market.getToken() == address(token), "token");
        assertTrue(market.getFundingAccount() == deployer, "funding account");
        assertEq(market.getMaxSessionDuration(), 7 days, "max duration");
        assertEq(market.getBidFee(), MOR / 10, "bid fee");
        assertEq(market.getProviderMinimumStake(), MOR / 5, "provider minimum");
        assertEq(market.getModelMinimumStake(), MOR / 10, "model minimum");
        (uint256 lo, uint256 hi) = market.getMinMaxBidPricePerSecond();
        assertTrue(lo == 1e10 && hi == 1e16, "price bounds");
        assertEq(market.getPools().length, 5, "pools");

        // a provider, a model, a bid, then a session opened and closed with signatures
        vm.startPrank(provider);
        token.approve(address(market), type(uint256).max);
        market.providerRegister(provider, 10 * MOR, "127.0.0.1:3333");
        string[] memory tags = new string[](0);
        market.modelRegister(provider, keccak256("m"), bytes32(0), 0, MOR / 10, "m", tags);
        modelId = market.getModelId(provider, keccak256("m"));
        bidId = market.postModelBid(provider, modelId, PRICE);
        vm.stopPrank();
        vm.prank(user);
        token.approve(address(market), type(uint256).max);
        bytes32 id = open(100 * MOR, false);
        vm.warp(market.getSession(id).endsAt + 1);
        uint256 before = token.balanceOf(provider);
        close(id, providerKey);
        assertTrue(token.balanceOf(provider) > before, "provider paid by the funding account");
        (, uint256 hold) = market.getUserStakesOnHold(user, 10);
        assertTrue(hold > 0, "used stake held until the next UTC day");
        assertEq(token.balanceOf(user) + hold, 1_000 * MOR, "user's stake back or on hold");

        // the router's batched read through the Multicall3 at its canonical address
        Multicall3.Call3[] memory calls = new Multicall3.Call3[](2);
        calls[0] = Multicall3.Call3(address(market), false, abi.encodeCall(IMarket.getBid, (bidId)));
        calls[1] = Multicall3.Call3(address(market), false, abi.encodeCall(IMarket.getProviderModelStats, (modelId, provider)));
        Multicall3.Result[] memory results = Multicall3(MULTICALL3).aggregate3(calls);
        assertTrue(abi.decode(results[0].returnData, (LibMarket.Bid)).provider == provider, "bid via multicall");
        assertEq(abi.decode(results[1].returnData, (LibMarket.ProviderModelStats)).successCount, 1, "stats via multicall");
    }

    function test_everyShippedSelectorRoutesToItsFacet() public {
        Diamond diamond = Diamond(payable(deployAsTheSandbox()));
        bytes4[] memory marketplace = facetSelectors("MarketplaceFacet");
        bytes4[] memory sessions = facetSelectors("SessionFacet");
        address marketplaceFacet = diamond.facetAddress(MarketplaceFacet.postModelBid.selector);
        address sessionFacet = diamond.facetAddress(SessionFacet.openSession.selector);
        assertTrue(marketplaceFacet != address(0) && sessionFacet != address(0) && marketplaceFacet != sessionFacet, "two facets");
        for (uint256 i; i < marketplace.length; ++i) {
            assertTrue(diamond.facetAddress(marketplace[i]) == marketplaceFacet, "marketplace selector");
        }
        for (uint256 i; i < sessions.length; ++i) {
            assertTrue(diamond.facetAddress(sessions[i]) == sessionFacet, "session selector");
        }
        assertTrue(diamond.facetAddress(0xdeadbeef) == address(0), "unknown selector");
        assertTrue(marketplace.length > 40 && sessions.length > 30, "whole ABIs routed");
    }

    function test_aSelectorCanBeRoutedOnlyOnce() public {
        Diamond.FacetCut[] memory cuts = new Diamond.FacetCut[](2);
        cuts[0] = Diamond.FacetCut(address(new MarketplaceFacet()), facetSelectors("MarketplaceFacet"));
        cuts[1] = Diamond.FacetCut(address(new SessionFacet()), facetSelectors("MarketplaceFacet"));
        vm.expectRevert(abi.encodeWithSelector(Diamond.SelectorAlreadyRouted.selector, cuts[0].selectors[0]));
        new Diamond(address(this), cuts);
    }

    function test_unknownSelectorRevertsClearly() public {
        address diamond = deployAsTheSandbox();
        vm.expectRevert(abi.encodeWithSelector(Diamond.FunctionDoesNotExist.selector, bytes4(0xdeadbeef)));
        (bool ok,) = diamond.call(hex"deadbeef");
        ok;
        vm.expectRevert(abi.encodeWithSelector(Diamond.FunctionDoesNotExist.selector, bytes4(0)));
        (ok,) = diamond.call("");
    }

    function test_initialisersAreOwnerOnlyAndRunOnce() public {
        market = IMarket(deployAsTheSandbox());
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.__Marketplace_init(address(token), 1, 2);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(LibMarket.OwnableUnauthorizedAccount.selector, user));
        market.__SessionRouter_init(user, 7 days, mainnetPools());
        vm.startPrank(deployer);
        vm.expectRevert(MarketplaceFacet.MarketplaceAlreadyInitialized.selector);
        market.__Marketplace_init(address(token), 1, 2);
        vm.expectRevert(SessionFacet.SessionRouterAlreadyInitialized.selector);
        market.__SessionRouter_init(user, 7 days, mainnetPools());
        vm.stopPrank();
    }

    function test_facetsHaveNoConstructorStateAndFitTheSizeLimit() public {
        address diamond = deployAsTheSandbox();
        address[3] memory code = [
            Diamond(payable(diamond)).facetAddress(MarketplaceFacet.postModelBid.selector),
            Diamond(payable(diamond)).facetAddress(SessionFacet.openSession.selector),
            diamond
        ];
        for (uint256 i; i < code.length; ++i) {
            assertTrue(code[i].code.length > 0 && code[i].code.length <= 24_576, "EIP-170 size limit");
        }
        assertTrue(MULTICALL3.code.length > 0, "multicall placed");
    }
}
