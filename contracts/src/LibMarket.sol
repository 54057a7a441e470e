// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice Shared storage and helpers of the mor-workbench marketplace (a clean-room,
/// ABI-compatible implementation of the Morpheus Compute Node marketplace).
/// Storage is packed so a session lifecycle writes as few fresh slots as possible.
library LibMarket {
    bytes32 internal constant SLOT = keccak256("mor-workbench.marketplace.storage.v1");

    uint256 internal constant MIN_SESSION_DURATION = 300;
    uint256 internal constant SIGNATURE_TTL = 600;
    uint256 internal constant REWARD_PERIOD = 365 days;
    uint256 internal constant COMPUTE_POOL = 3;

    // ----- ABI structs (as the live facets return them) -----
    struct Pool {
        uint256 initialReward;
        uint256 rewardDecrease;
        uint128 payoutStart;
        uint128 decreaseInterval;
    }

    struct Provider {
        string endpoint;
        uint256 stake;
        uint128 createdAt;
        uint128 limitPeriodEnd;
        uint256 limitPeriodEarned;
        bool isDeleted;
    }

    struct Model {
        bytes32 ipfsCID;
        uint256 fee;
        uint256 stake;
        address owner;
        string name;
        string[] tags;
        uint128 createdAt;
        bool isDeleted;
    }

    struct Bid {
        address provider;
        bytes32 modelId;
        uint256 pricePerSecond;
        uint256 nonce;
        uint128 createdAt;
        uint128 deletedAt;
    }

    struct Session {
        address user;
        bytes32 bidId;
        uint256 stake;
        bytes closeoutReceipt;
        uint256 closeoutType;
        uint256 providerWithdrawnAmount;
        uint128 openedAt;
        uint128 endsAt;
        uint128 closedAt;
        bool isActive;
        bool isDirectPaymentFromUser;
    }

    struct SD {
        int64 mean;
        int64 sqSum;
    }

    struct ProviderModelStats {
        SD tpsScaled1000;
        SD ttftMs;
        uint32 totalDuration;
        uint32 successCount;
        uint32 totalCount;
    }

    struct ModelStats {
        SD tpsScaled1000;
        SD ttftMs;
        SD totalDuration;
        uint32 count;
    }

    // ----- packed storage records -----
    struct StoredProvider {
        uint128 stake;
        uint128 limitPeriodEarned;
        uint64 createdAt;
        uint64 limitPeriodEnd;
        bool isDeleted;
        string endpoint;
    }

    struct StoredModel {
        bytes32 ipfsCID;
        uint256 fee;
        uint128 stake;
        uint64 createdAt;
        bool isDeleted;
        address owner;
        string name;
        string[] tags;
    }

    struct StoredBid {
        address provider;
        uint48 createdAt;
        uint48 deletedAt;
        bytes32 modelId;
        uint128 pricePerSecond;
        uint96 nonce;
        uint32 index; // position in bidIdAt: sessions refer to their bid by it
    }

    /// Two slots per session: the bid is referred to by its uint32 index, not its 32-byte id.
    struct StoredSession {
        address user; // slot 0
        uint32 openedAt;
        uint32 endsAt;
        bool isActive;
        bool isDirect;
        uint8 closeoutType;
        uint96 stake; // slot 1
        uint96 providerWithdrawn;
        uint32 closedAt;
        uint32 bidIndex;
    }

    struct OnHold {
        uint128 amount;
        uint64 releaseAt;
    }

    /// Emission of each pool up to the start of one day, cached on write paths.
    struct DayCache {
        uint64 day;
        uint96 computeEmitted;
        uint96 otherEmitted;
    }

    /// A list of uint32 indexes packed eight to a word; word 0 keeps the length in its low bits.
    struct IndexList {
        mapping(uint256 => uint256) words;
    }

    struct Bytes32Set {
        bytes32[] values;
        mapping(bytes32 => uint256) position; // index + 1
    }

    struct AddressSet {
        address[] values;
        mapping(address => uint256) position;
    }

    struct Layout {
        address owner;
        address token;
        address fundingAccount;
        uint128 maxSessionDuration;
        uint256 providerMinimumStake;
        uint256 modelMinimumStake;
        uint256 bidFee;
        uint256 feeBalance;
        uint256 bidMinPricePerSecond;
        uint256 bidMaxPricePerSecond;
        uint256 providersTotalClaimed;
        uint256 sessionCount;
        Pool[] pools;
        DayCache dayCache;
        mapping(address => StoredProvider) providers;
        AddressSet activeProviders;
        mapping(bytes32 => StoredModel) models;
        bytes32[] modelIds;
        Bytes32Set activeModels;
        mapping(bytes32 => StoredBid) bids;
        mapping(uint256 => bytes32) bidIdAt;
        uint256 bidCount;
        mapping(bytes32 => uint256) providerModelNonce;
        mapping(bytes32 => bytes32[]) modelBids;
        mapping(address => bytes32[]) providerBids;
        mapping(bytes32 => Bytes32Set) modelActiveBids;
        mapping(address => Bytes32Set) providerActiveBids;
        mapping(bytes32 => StoredSession) sessions;
        mapping(uint256 => bytes32) sessionIdAt;
        mapping(address => IndexList) userSessions;
        mapping(address => IndexList) providerSessions;
        mapping(bytes32 => IndexList) modelSessions;
        mapping(address => OnHold[]) onHold;
        mapping(bytes32 => mapping(address => ProviderModelStats)) providerModelStats;
        mapping(bytes32 => ModelStats) modelStats;
    }

    function layout() internal pure returns (Layout storage s) {
        bytes32 slot = SLOT;
        assembly {
            s.slot := slot
        }
    }

    // ----- errors shared by the facets (names and arguments as on the live network) -----
    error OwnableUnauthorizedAccount(address account);
    error InsufficientRightsForOperation(address delegator, address delegatee);

    /// A value does not fit the packed field it is stored in (OpenZeppelin SafeCast's error).
    error SafeCastOverflowedUintDowncast(uint8 bits, uint256 value);

    function toUint32(uint256 value) internal pure returns (uint32) {
        if (value > type(uint32).max) revert SafeCastOverflowedUintDowncast(32, value);
        return uint32(value);
    }

    function toUint96(uint256 value) internal pure returns (uint96) {
        if (value > type(uint96).max) revert SafeCastOverflowedUintDowncast(96, value);
        return uint96(value);
    }

    function toUint128(uint256 value) internal pure returns (uint128) {
        if (value > type(uint128).max) revert SafeCastOverflowedUintDowncast(128, value);
        return uint128(value);
    }

    function enforceOwner() internal view {
        if (msg.sender != layout().owner) revert OwnableUnauthorizedAccount(msg.sender);
    }

    function enforceSelf(address account) internal view {
        if (msg.sender != account) revert InsufficientRightsForOperation(account, msg.sender);
    }

    // ----- token transfers (MOR reverts on failure; the bool is checked all the same) -----
    function pull(address from, uint256 amount) internal {
        if (amount == 0) return;
        _call(abi.encodeWithSelector(0x23b872dd, from, address(this), amount));
    }

    function payFrom(address from, address to, uint256 amount) internal {
        _call(abi.encodeWithSelector(0x23b872dd, from, to, amount));
    }

    function pay(address to, uint256 amount) internal {
        if (amount == 0) return;
        _call(abi.encodeWithSelector(0xa9059cbb, to, amount));
    }

    function _call(bytes memory data) private {
        (bool ok, bytes memory ret) = layout().token.call(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        require(ret.length == 0 || abi.decode(ret, (bool)), "MOR transfer failed");
    }

    // ----- sets and lists -----
    function add(Bytes32Set storage set, bytes32 value) internal {
        if (set.position[value] != 0) return;
        set.values.push(value);
        set.position[value] = set.values.length;
    }

    function remove(Bytes32Set storage set, bytes32 value) internal {
        uint256 position = set.position[value];
        if (position == 0) return;
        bytes32 last = set.values[set.values.length - 1];
        set.values[position - 1] = last;
        set.position[last] = position;
        set.values.pop();
        delete set.position[value];
    }

    function add(AddressSet storage set, address value) internal {
        if (set.position[value] != 0) return;
        set.values.push(value);
        set.position[value] = set.values.length;
    }

    function remove(AddressSet storage set, address value) internal {
        uint256 position = set.position[value];
        if (position == 0) return;
        address last = set.values[set.values.length - 1];
        set.values[position - 1] = last;
        set.position[last] = position;
        set.values.pop();
        delete set.position[value];
    }

    function push(IndexList storage list, uint256 index) internal {
        uint256 head = list.words[0];
        uint256 count = head & 0xffffffff;
        uint256 slotIndex = count + 1; // item i lives at position i + 1 (position 0 is the length)
        uint256 word = slotIndex / 8;
        uint256 shift = (slotIndex % 8) * 32;
        if (word == 0) {
            list.words[0] = ((head & ~uint256(0xffffffff)) | (count + 1)) | (index << shift);
        } else {
            list.words[0] = (head & ~uint256(0xffffffff)) | (count + 1);
            list.words[word] |= index << shift;
        }
    }

    function length(IndexList storage list) internal view returns (uint256) {
        return list.words[0] & 0xffffffff;
    }

    function at(IndexList storage list, uint256 i) internal view returns (uint256) {
        uint256 position = i + 1;
        return (list.words[position / 8] >> ((position % 8) * 32)) & 0xffffffff;
    }

    function page(uint256 total, uint256 offset, uint256 limit)
        internal
        pure
        returns (uint256 start, uint256 count)
    {
        if (offset >= total) return (total, 0);
        uint256 rest = total - offset;
        return (offset, rest < limit ? rest : limit);
    }

    function slice(bytes32[] storage values, uint256 offset, uint256 limit)
        internal
        view
        returns (bytes32[] memory out, uint256 total)
    {
        total = values.length;
        (uint256 start, uint256 count) = page(total, offset, limit);
        out = new bytes32[](count);
        for (uint256 i; i < count; ++i) {
            out[i] = values[start + i];
        }
    }

    function bidIsActive(StoredBid storage bid) internal view returns (bool) {
        return bid.createdAt != 0 && bid.deletedAt == 0;
    }
}
