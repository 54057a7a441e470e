// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base, IMarket, Vm} from "./Base.sol";
import {MorpheusToken} from "../src/MorpheusToken.sol";
import {LibMarket} from "../src/LibMarket.sol";

/// Random marketplace traffic: bids, opens, closes (signed or disputed), claims, withdrawals, time.
contract Handler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    MorpheusToken internal token;
    IMarket internal market;
    Base internal base;
    bytes32 internal modelId;
    uint256[] internal providerKeys;
    uint256 internal constant USER_KEY = 0xB0B;
    address internal constant TREASURY = address(0x7EA5);
    address public user;
    bytes32[] public sessions;
    uint256 public closed;
    uint256 public collected;
    mapping(address => uint256) internal keyOf;
    mapping(address => bytes32) internal bidOf;

    constructor(MorpheusToken token_, IMarket market_, bytes32 modelId_, uint256[] memory keys, bytes32[] memory bids) {
        token = token_;
        market = market_;
        modelId = modelId_;
        providerKeys = keys;
        user = vm.addr(USER_KEY);
        for (uint256 i; i < keys.length; ++i) {
            keyOf[vm.addr(keys[i])] = keys[i];
            bidOf[vm.addr(keys[i])] = bids[i];
        }
    }

    function sessionCount() external view returns (uint256) {
        return sessions.length;
    }

    function providerAt(uint256 seed) public view returns (address) {
        return vm.addr(providerKeys[seed % providerKeys.length]);
    }

    function rebid(uint256 seed, uint256 price) external {
        address p = providerAt(seed);
        price = 1e12 + (price % 1e15);
        if (token.balanceOf(p) < market.getBidFee()) return;
        vm.prank(p);
        bidOf[p] = market.postModelBid(p, modelId, price);
    }

    function openSession(uint256 seed, uint256 amount, bool direct) external {
        address p = providerAt(seed);
        amount = 1 * 1e18 + (amount % (500 * 1e18));
        if (token.balanceOf(user) < amount) return;
        bytes memory a = abi.encode(bidOf[p], block.chainid, user, uint128(block.timestamp));
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", keccak256(a)));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keyOf[p], digest);
        vm.prank(user);
        try market.openSession(user, amount, direct, a, abi.encodePacked(r, s, v)) returns (bytes32 id) {
            sessions.push(id);
        } catch {}
    }

    function closeSession(uint256 seed, bool dispute) external {
        if (sessions.length == 0) return;
        bytes32 id = sessions[seed % sessions.length];
        LibMarket.Session memory s = market.getSession(id);
        if (s.closedAt != 0) return;
        address p = market.getBid(s.bidId).provider;
        bytes memory r = abi.encode(id, block.chainid, uint128(block.timestamp), uint32(seed % 50_000), uint32(seed % 900));
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", keccak256(r)));
        (uint8 v, bytes32 rr, bytes32 ss) = vm.sign(dispute ? USER_KEY : keyOf[p], digest);
        vm.prank(user);
        market.closeSession(r, abi.encodePacked(rr, ss, v));
        ++closed;
    }

    function claim(uint256 seed) external {
        if (sessions.length == 0) return;
        bytes32 id = sessions[seed % sessions.length];
        vm.prank(market.getBid(market.getSession(id).bidId).provider);
        try market.claimForProvider(id) {} catch {}
    }

    function topUp(uint256 seed, uint256 amount) external {
        address p = providerAt(seed);
        amount = amount % (5 * 1e18);
        if (token.balanceOf(p) < amount) return;
        vm.prank(p);
        market.providerRegister(p, amount, "127.0.0.1:4444");
    }

    function deleteBid(uint256 seed) external {
        address p = providerAt(seed);
        if (!market.isBidActive(bidOf[p])) return;
        vm.prank(p);
        market.deleteModelBid(bidOf[p]);
    }

    function collectFees(uint256 amount) external {
        uint256 fees = market.getFeeBalance();
        if (fees == 0) return;
        address owner = market.owner();
        vm.prank(owner);
        market.withdrawFee(TREASURY, 1 + (amount % fees));
        ++collected;
    }

    function withdraw() external {
        vm.prank(user);
        try market.withdrawUserStakes(user, 20) {} catch {}
    }

    function warp(uint256 secondsAhead) external {
        vm.warp(block.timestamp + (secondsAhead % 2 days));
    }
}

contract InvariantTest is Base {
    Handler internal handler;
    address[] internal holders;

    function setUp() public override {
        super.setUp();
        uint256[] memory keys = new uint256[](3);
        bytes32[] memory bids = new bytes32[](3);
        keys[0] = providerKey;
        bids[0] = bidId;
        for (uint256 i = 1; i < 3; ++i) {
            keys[i] = 0xC0DE + i;
            bids[i] = registerProvider(vm.addr(keys[i]), i == 1 ? MOR / 5 : 50 * MOR, modelId, PRICE * (i + 1));
        }
        handler = new Handler(token, market, modelId, keys, bids);
        holders = [admin, user, address(market), vm.addr(keys[0]), vm.addr(keys[1]), vm.addr(keys[2]), address(0x7EA5)];
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// Every MOR stays with the known holders: none created, none sent anywhere else.
    function invariant_noMorCreatedOrLost() public view {
        uint256 sum;
        for (uint256 i; i < holders.length; ++i) {
            sum += token.balanceOf(holders[i]);
        }
        assertEq(sum, token.totalSupply(), "balances add up to the supply");
        assertEq(token.totalSupply(), 100_000_000 * MOR, "supply unchanged");
    }

    /// The diamond can always pay back what it owes: fees, model and provider stakes, on-hold
    /// stakes, the stakes of open sessions and the unpaid earnings of direct-payment sessions.
    function invariant_diamondIsSolvent() public view {
        uint256 owed = market.getFeeBalance() + MOR / 10; // fees and the model's stake
        for (uint256 i; i < 3; ++i) {
            owed += market.getProvider(holders[3 + i]).stake;
        }
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(handler.user(), 255);
        owed += available + hold;
        for (uint256 i; i < handler.sessionCount(); ++i) {
            LibMarket.Session memory s = market.getSession(handler.sessions(i));
            uint256 withdrawn = s.isDirectPaymentFromUser ? s.providerWithdrawnAmount : 0;
            if (s.closedAt == 0) {
                owed += s.stake - withdrawn;
            } else if (s.isDirectPaymentFromUser) {
                uint256 end = s.closedAt < s.endsAt ? s.closedAt : s.endsAt;
                owed += (end - s.openedAt) * market.getBid(s.bidId).pricePerSecond - withdrawn;
            }
        }
        assertTrue(token.balanceOf(address(market)) >= owed, "diamond holds what it owes");
    }

    /// Each handler action really acts (the invariant runs would prove little otherwise).
    function test_handlerActionsTakeEffect() public {
        handler.openSession(0, 100 * MOR, false);
        handler.openSession(1, 100 * MOR, true);
        assertEq(handler.sessionCount(), 2, "opened");
        handler.warp(600);
        handler.closeSession(0, false);
        handler.closeSession(1, true);
        assertEq(handler.closed(), 2, "closed");
        handler.warp(1 days);
        handler.claim(1);
        handler.withdraw();
        handler.rebid(0, 5e12);
        handler.deleteBid(0);
        handler.topUp(2, MOR);
        handler.collectFees(1);
        assertEq(handler.collected(), 1, "fees collected");
        (uint256 available, uint256 hold) = market.getUserStakesOnHold(handler.user(), 255);
        assertEq(available + hold, 0, "on-hold stakes withdrawn");
        invariant_noMorCreatedOrLost();
        invariant_diamondIsSolvent();
        invariant_claimsAddUp();
    }

    /// Every payout is accounted for: the total claimed is the sum of what sessions paid.
    function invariant_claimsAddUp() public view {
        uint256 paid;
        for (uint256 i; i < handler.sessionCount(); ++i) {
            paid += market.getSession(handler.sessions(i)).providerWithdrawnAmount;
        }
        assertEq(market.getProvidersTotalClaimed(), paid, "claimed = sum of session payouts");
    }
}
