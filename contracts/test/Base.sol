// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {MorpheusToken} from "../src/MorpheusToken.sol";
import {Diamond} from "../src/Diamond.sol";
import {MarketplaceFacet} from "../src/MarketplaceFacet.sol";
import {SessionFacet} from "../src/SessionFacet.sol";
import {LibMarket} from "../src/LibMarket.sol";

/// The forge cheatcodes these tests use (forge-std is not installable offline).
interface Vm {
    function readFile(string calldata) external view returns (string memory);
    function parseJsonKeys(string calldata, string calldata) external pure returns (string[] memory);
    function getCode(string calldata) external view returns (bytes memory);
    function getDeployedCode(string calldata) external view returns (bytes memory);
    function etch(address, bytes calldata) external;
    function cool(address) external;
    function deal(address, uint256) external;
    function roll(uint256) external;
    function fee(uint256) external;
    function coinbase(address) external;
    function prevrandao(bytes32) external;
    function expectEmit() external;
    function expectEmit(address) external;
    function expectRevert() external;
    function warp(uint256) external;
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function addr(uint256) external pure returns (address);
    function sign(uint256, bytes32) external pure returns (uint8, bytes32, bytes32);
    function expectRevert(bytes4) external;
    function expectRevert(bytes calldata) external;
    function snapshotValue(string calldata group, string calldata name, uint256 value) external;
    function assume(bool) external pure;
}

/// One interface over the whole diamond (both facets), as a router sees it.
interface IMarket {
    // administration
    function __Marketplace_init(address, uint256, uint256) external;
    function __SessionRouter_init(address, uint128, LibMarket.Pool[] calldata) external;
    function setMarketplaceBidFee(uint256) external;
    function setMinMaxBidPricePerSecond(uint256, uint256) external;
    function providerSetMinStake(uint256) external;
    function modelSetMinStake(uint256) external;
    function withdrawFee(address, uint256) external;
    function setMaxSessionDuration(uint128) external;
    function setPoolConfig(uint256, LibMarket.Pool calldata) external;
    function owner() external view returns (address);
    // providers
    function providerRegister(address, uint256, string calldata) external;
    function providerDeregister(address) external;
    function getProvider(address) external view returns (LibMarket.Provider memory);
    function getProviderMinimumStake() external view returns (uint256);
    function getIsProviderActive(address) external view returns (bool);
    function getActiveProviders(uint256, uint256) external view returns (address[] memory, uint256);
    // models
    function modelRegister(address, bytes32, bytes32, uint256, uint256, string calldata, string[] calldata) external;
    function modelDeregister(bytes32) external;
    function getModelId(address, bytes32) external pure returns (bytes32);
    function getModel(bytes32) external view returns (LibMarket.Model memory);
    function getModelIds(uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getActiveModelIds(uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getModelMinimumStake() external view returns (uint256);
    function getIsModelActive(bytes32) external view returns (bool);
    // bids
    function postModelBid(address, bytes32, uint256) external returns (bytes32);
    function deleteModelBid(bytes32) external;
    function getBidId(address, bytes32, uint256) external pure returns (bytes32);
    function getProviderModelId(address, bytes32) external pure returns (bytes32);
    function getBid(bytes32) external view returns (LibMarket.Bid memory);
    function isBidActive(bytes32) external view returns (bool);
    function getModelBids(bytes32, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getProviderBids(address, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getModelActiveBids(bytes32, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getProviderActiveBids(address, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getBidFee() external view returns (uint256);
    function getFeeBalance() external view returns (uint256);
    function getMinMaxBidPricePerSecond() external view returns (uint256, uint256);
    function getToken() external view returns (address);
    // delegation (none here)
    function isRightsDelegated(address, address, bytes32) external view returns (bool);
    function getRegistry() external view returns (address);
    function DELEGATION_RULES_PROVIDER() external view returns (bytes32);
    function DELEGATION_RULES_MODEL() external view returns (bytes32);
    function DELEGATION_RULES_MARKETPLACE() external view returns (bytes32);
    function DELEGATION_RULES_SESSION() external view returns (bytes32);
    // sessions
    function openSession(address, uint256, bool, bytes calldata, bytes calldata) external returns (bytes32);
    function closeSession(bytes calldata, bytes calldata) external;
    function claimForProvider(bytes32) external;
    function withdrawUserStakes(address, uint8) external;
    function getUserStakesOnHold(address, uint8) external view returns (uint256, uint256);
    function getSession(bytes32) external view returns (LibMarket.Session memory);
    function getSessionId(address, address, bytes32, uint256) external pure returns (bytes32);
    function getUserSessions(address, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getProviderSessions(address, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getModelSessions(bytes32, uint256, uint256) external view returns (bytes32[] memory, uint256);
    function getTotalSessions(address) external view returns (uint256);
    function getIsProviderApprovalUsed(bytes calldata) external view returns (bool);
    function getProviderModelStats(bytes32, address) external view returns (LibMarket.ProviderModelStats memory);
    function getModelStats(bytes32) external view returns (LibMarket.ModelStats memory);
    // economics
    function startOfTheDay(uint128) external pure returns (uint128);
    function getSessionEnd(uint256, uint256, uint128) external view returns (uint128);
    function stakeToStipend(uint256, uint128) external view returns (uint256);
    function stipendToStake(uint256, uint128) external view returns (uint256);
    function totalMORSupply(uint128) external view returns (uint256);
    function getComputeBalance(uint128) external view returns (uint256);
    function getTodaysBudget(uint128) external view returns (uint256);
    function getProvidersTotalClaimed() external view returns (uint256);
    function getFundingAccount() external view returns (address);
    function getMaxSessionDuration() external view returns (uint128);
    function getPools() external view returns (LibMarket.Pool[] memory);
    function getPool(uint256) external view returns (LibMarket.Pool memory);
    function MIN_SESSION_DURATION() external view returns (uint32);
    function SIGNATURE_TTL() external view returns (uint32);
    function COMPUTE_POOL_INDEX() external view returns (uint256);
}

contract Base {
    bool public IS_TEST = true;
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant MOR = 1e18;
    uint256 internal constant START = 1707393600; // mainnet payoutStart, 2024-02-08 12:00 UTC
    uint256 internal constant NOW = 1764000000 + 12 hours; // 2025-11-24 12:00 UTC
    uint256 internal constant PRICE = 1e13; // wei per second

    MorpheusToken internal token;
    IMarket internal market;
    address internal admin = address(this);
    uint256 internal providerKey = 0xA11CE;
    uint256 internal userKey = 0xB0B;
    address internal provider;
    address internal user;
    bytes32 internal modelId;
    bytes32 internal bidId;

    function setUp() public virtual {
        vm.warp(NOW);
        provider = vm.addr(providerKey);
        user = vm.addr(userKey);
        token = new MorpheusToken(100_000_000 * MOR);
        market = IMarket(address(deployDiamond(admin)));
        market.__Marketplace_init(address(token), 1e10, 1e16);
        market.__SessionRouter_init(admin, 7 days, mainnetPools());
        market.setMarketplaceBidFee(MOR / 10);
        market.providerSetMinStake(MOR / 5);
        market.modelSetMinStake(MOR / 10);
        token.approve(address(market), type(uint256).max);

        token.transfer(provider, 1_000 * MOR);
        token.transfer(user, 10_000 * MOR);
        modelId = registerModel("llama-3.3-70b");
        bidId = registerProvider(provider, 100 * MOR, modelId, PRICE);
        vm.prank(user);
        token.approve(address(market), type(uint256).max);
    }

    function deployDiamond(address owner_) internal returns (Diamond) {
        Diamond.FacetCut[] memory cuts = new Diamond.FacetCut[](2);
        cuts[0] = Diamond.FacetCut(address(new MarketplaceFacet()), marketplaceSelectors());
        cuts[1] = Diamond.FacetCut(address(new SessionFacet()), sessionSelectors());
        return new Diamond(owner_, cuts);
    }

    /// A facet's selectors exactly as the package ships them: every external function of the
    /// facet, from forge's methodIdentifiers (what export_artifacts.py writes to deployment.json).
    function facetSelectors(string memory name) internal view returns (bytes4[] memory selectors) {
        string memory json = vm.readFile(string.concat("out/", name, ".sol/", name, ".json"));
        string[] memory signatures = vm.parseJsonKeys(json, ".methodIdentifiers");
        selectors = new bytes4[](signatures.length);
        for (uint256 i; i < signatures.length; ++i) {
            selectors[i] = bytes4(keccak256(bytes(signatures[i])));
        }
    }

    function marketplaceSelectors() internal view returns (bytes4[] memory) {
        return facetSelectors("MarketplaceFacet");
    }

    function sessionSelectors() internal view returns (bytes4[] memory) {
        return facetSelectors("SessionFacet");
    }

    function mainnetPools() internal pure returns (LibMarket.Pool[] memory pools) {
        pools = new LibMarket.Pool[](5);
        for (uint256 i; i < 4; ++i) {
            pools[i] = LibMarket.Pool(3456 * MOR, 592558728240000000, uint128(START), 1 days);
        }
        pools[4] = LibMarket.Pool(576 * MOR, 98759788040000000, uint128(START), 1 days);
    }

    function registerModel(string memory name) internal returns (bytes32 id) {
        string[] memory tags = new string[](1);
        tags[0] = "llm";
        market.modelRegister(admin, keccak256(bytes(name)), bytes32(0), 0, MOR / 10, name, tags);
        id = market.getModelId(admin, keccak256(bytes(name)));
    }

    function registerProvider(address who, uint256 stake, bytes32 model, uint256 price) internal returns (bytes32) {
        if (token.balanceOf(who) < stake + MOR) token.transfer(who, stake + MOR);
        vm.startPrank(who);
        token.approve(address(market), type(uint256).max);
        market.providerRegister(who, stake, "127.0.0.1:3333");
        bytes32 id = market.postModelBid(who, model, price);
        vm.stopPrank();
        return id;
    }

    // ----- signatures as the provider / user sign them off chain (EIP-191 over keccak) -----
    function signEth(uint256 key, bytes memory payload) internal pure returns (bytes memory) {
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", keccak256(payload)));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function approval(bytes32 bid, address who, uint256 timestamp) internal view returns (bytes memory) {
        return abi.encode(bid, block.chainid, who, uint128(timestamp));
    }

    function receipt(bytes32 sessionId, uint256 timestamp) internal view returns (bytes memory) {
        return abi.encode(sessionId, block.chainid, uint128(timestamp), uint32(15_000), uint32(250));
    }

    function open(uint256 amount, bool direct) internal returns (bytes32 id) {
        bytes memory a = approval(bidId, user, block.timestamp);
        bytes memory sig = signEth(providerKey, a);
        vm.prank(user);
        id = market.openSession(user, amount, direct, a, sig);
    }

    function close(bytes32 id, uint256 signerKey) internal {
        bytes memory r = receipt(id, block.timestamp);
        bytes memory sig = signEth(signerKey, r);
        vm.prank(user);
        market.closeSession(r, sig);
    }

    /// Deposit that buys `duration` seconds at `price`, by the contract's own maths.
    function depositFor(uint256 duration, uint256 price) internal view returns (uint256 amount) {
        amount = market.stipendToStake(duration * price, uint128(block.timestamp)) + 1;
        while (market.getSessionEnd(amount, price, uint128(block.timestamp)) < block.timestamp + duration) {
            amount += amount / 1e6 + 1;
        }
    }

    // ----- assertions -----
    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", vm_toString(a), " != ", vm_toString(b)));
    }

    function assertTrue(bool ok, string memory what) internal pure {
        require(ok, what);
    }

    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + (x % (hi - lo + 1));
    }

    function vm_toString(uint256 v) internal pure returns (string memory) {
        if (v == 0) return "0";
        bytes memory buf;
        while (v != 0) {
            buf = abi.encodePacked(bytes1(uint8(48 + (v % 10))), buf);
            v /= 10;
        }
        return string(buf);
    }
}
