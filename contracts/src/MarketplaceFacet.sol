// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {LibMarket} from "./LibMarket.sol";

/// @notice Providers, models, bids and marketplace administration, behind the Diamond.
/// Function names, arguments, results, events and errors follow the live network's
/// ProviderRegistry, ModelRegistry and Marketplace facets.
contract MarketplaceFacet {
    using LibMarket for LibMarket.Bytes32Set;
    using LibMarket for LibMarket.AddressSet;

    event ProviderRegistered(address indexed provider);
    event ProviderDeregistered(address indexed provider);
    event ProviderMinimumStakeUpdated(uint256 providerMinimumStake);
    event ModelRegisteredUpdated(address indexed owner, bytes32 indexed modelId);
    event ModelDeregistered(address indexed owner, bytes32 indexed modelId);
    event ModelMinimumStakeUpdated(uint256 modelMinimumStake);
    event MarketplaceBidPosted(address indexed provider, bytes32 indexed modelId, uint256 nonce);
    event MarketplaceBidDeleted(address indexed provider, bytes32 indexed modelId, uint256 nonce);
    event MaretplaceFeeUpdated(uint256 bidFee);
    event MarketplaceBidMinMaxPriceUpdated(uint256 bidMinPricePerSecond, uint256 bidMaxPricePerSecond);

    error ProviderStakeTooLow(uint256 amount, uint256 minAmount);
    error ProviderNotFound();
    error ProviderHasActiveBids();
    error ProviderHasAlreadyDeregistered();
    error ModelStakeTooLow(uint256 amount, uint256 minAmount);
    error ModelHasActiveBids();
    error ModelHasAlreadyDeregistered();
    error MarketplaceProviderNotFound();
    error MarketplaceModelNotFound();
    error MarketplaceBidPricePerSecondInvalid();
    error MarketplaceBidMinPricePerSecondIsZero();
    error MarketplaceBidMinPricePerSecondIsInvalid();
    error MarketplaceActiveBidNotFound();
    error MarketplaceFeeAmountIsZero();
    error MarketplaceAlreadyInitialized();

    // ----- administration -----
    function __Marketplace_init(address token_, uint256 bidMinPricePerSecond_, uint256 bidMaxPricePerSecond_)
        external
    {
        LibMarket.enforceOwner();
        LibMarket.Layout storage s = LibMarket.layout();
        if (s.token != address(0)) revert MarketplaceAlreadyInitialized();
        s.token = token_;
        setMinMaxBidPricePerSecond(bidMinPricePerSecond_, bidMaxPricePerSecond_);
    }

    function setMinMaxBidPricePerSecond(uint256 bidMinPricePerSecond_, uint256 bidMaxPricePerSecond_)
        public
    {
        LibMarket.enforceOwner();
        if (bidMinPricePerSecond_ == 0) revert MarketplaceBidMinPricePerSecondIsZero();
        if (bidMinPricePerSecond_ > bidMaxPricePerSecond_) revert MarketplaceBidMinPricePerSecondIsInvalid();
        LibMarket.Layout storage s = LibMarket.layout();
        s.bidMinPricePerSecond = bidMinPricePerSecond_;
        s.bidMaxPricePerSecond = bidMaxPricePerSecond_;
        emit MarketplaceBidMinMaxPriceUpdated(bidMinPricePerSecond_, bidMaxPricePerSecond_);
    }

    function setMarketplaceBidFee(uint256 bidFee_) external {
        LibMarket.enforceOwner();
        LibMarket.layout().bidFee = bidFee_;
        emit MaretplaceFeeUpdated(bidFee_);
    }

    function providerSetMinStake(uint256 providerMinimumStake_) external {
        LibMarket.enforceOwner();
        LibMarket.layout().providerMinimumStake = providerMinimumStake_;
        emit ProviderMinimumStakeUpdated(providerMinimumStake_);
    }

    function modelSetMinStake(uint256 modelMinimumStake_) external {
        LibMarket.enforceOwner();
        LibMarket.layout().modelMinimumStake = modelMinimumStake_;
        emit ModelMinimumStakeUpdated(modelMinimumStake_);
    }

    function withdrawFee(address recipient_, uint256 amount_) external {
        LibMarket.enforceOwner();
        LibMarket.Layout storage s = LibMarket.layout();
        uint256 amount = amount_ < s.feeBalance ? amount_ : s.feeBalance;
        if (amount == 0) revert MarketplaceFeeAmountIsZero();
        s.feeBalance -= amount;
        LibMarket.pay(recipient_, amount);
    }

    // ----- providers -----
    function providerRegister(address provider_, uint256 amount_, string calldata endpoint_) external {
        LibMarket.enforceSelf(provider_);
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredProvider storage p = s.providers[provider_];
        uint256 newStake = p.stake + amount_;
        if (newStake < s.providerMinimumStake) revert ProviderStakeTooLow(newStake, s.providerMinimumStake);
        LibMarket.pull(provider_, amount_);
        if (p.createdAt == 0) {
            p.createdAt = uint64(block.timestamp);
            p.limitPeriodEnd = uint64(block.timestamp + LibMarket.REWARD_PERIOD);
        }
        p.isDeleted = false;
        p.stake = LibMarket.toUint128(newStake);
        p.endpoint = endpoint_;
        s.activeProviders.add(provider_);
        emit ProviderRegistered(provider_);
    }

    function providerDeregister(address provider_) external {
        LibMarket.enforceSelf(provider_);
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredProvider storage p = s.providers[provider_];
        if (p.createdAt == 0) revert ProviderNotFound();
        if (s.providerActiveBids[provider_].values.length != 0) revert ProviderHasActiveBids();
        if (p.isDeleted) revert ProviderHasAlreadyDeregistered();
        uint256 locked = block.timestamp > p.limitPeriodEnd ? 0 : p.limitPeriodEarned;
        uint256 withdraw = p.stake > locked ? p.stake - locked : 0;
        p.stake -= uint128(withdraw);
        p.isDeleted = true;
        s.activeProviders.remove(provider_);
        LibMarket.pay(provider_, withdraw);
        emit ProviderDeregistered(provider_);
    }

    function getProvider(address provider_) external view returns (LibMarket.Provider memory) {
        LibMarket.StoredProvider storage p = LibMarket.layout().providers[provider_];
        return LibMarket.Provider(p.endpoint, p.stake, p.createdAt, p.limitPeriodEnd, p.limitPeriodEarned, p.isDeleted);
    }

    function getProviderMinimumStake() external view returns (uint256) {
        return LibMarket.layout().providerMinimumStake;
    }

    function getIsProviderActive(address provider_) public view returns (bool) {
        LibMarket.StoredProvider storage p = LibMarket.layout().providers[provider_];
        return p.createdAt != 0 && !p.isDeleted;
    }

    function getActiveProviders(uint256 offset_, uint256 limit_) external view returns (address[] memory out, uint256 total) {
        address[] storage values = LibMarket.layout().activeProviders.values;
        total = values.length;
        (uint256 start, uint256 count) = LibMarket.page(total, offset_, limit_);
        out = new address[](count);
        for (uint256 i; i < count; ++i) {
            out[i] = values[start + i];
        }
    }

    // ----- models -----
    function getModelId(address account_, bytes32 baseModelId_) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(account_, baseModelId_));
    }

    function modelRegister(
        address modelOwner_,
        bytes32 baseModelId_,
        bytes32 ipfsCID_,
        uint256 fee_,
        uint256 amount_,
        string calldata name_,
        string[] calldata tags_
    ) external {
        LibMarket.enforceSelf(modelOwner_);
        LibMarket.Layout storage s = LibMarket.layout();
        bytes32 modelId = getModelId(modelOwner_, baseModelId_);
        LibMarket.StoredModel storage m = s.models[modelId];
        uint256 newStake = m.stake + amount_;
        if (newStake < s.modelMinimumStake) revert ModelStakeTooLow(newStake, s.modelMinimumStake);
        LibMarket.pull(modelOwner_, amount_);
        if (m.createdAt == 0) {
            s.modelIds.push(modelId);
            m.createdAt = uint64(block.timestamp);
            m.owner = modelOwner_;
        }
        m.stake = LibMarket.toUint128(newStake);
        m.ipfsCID = ipfsCID_;
        m.fee = fee_;
        m.name = name_;
        delete m.tags;
        for (uint256 i; i < tags_.length; ++i) {
            m.tags.push(tags_[i]);
        }
        m.isDeleted = false;
        s.activeModels.add(modelId);
        emit ModelRegisteredUpdated(modelOwner_, modelId);
    }

    function modelDeregister(bytes32 modelId_) external {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredModel storage m = s.models[modelId_];
        LibMarket.enforceSelf(m.owner);
        if (s.modelActiveBids[modelId_].values.length != 0) revert ModelHasActiveBids();
        if (m.isDeleted) revert ModelHasAlreadyDeregistered();
        uint256 stake = m.stake;
        m.stake = 0;
        m.isDeleted = true;
        s.activeModels.remove(modelId_);
        LibMarket.pay(m.owner, stake);
        emit ModelDeregistered(m.owner, modelId_);
    }

    function getModel(bytes32 modelId_) external view returns (LibMarket.Model memory) {
        LibMarket.StoredModel storage m = LibMarket.layout().models[modelId_];
        return LibMarket.Model(m.ipfsCID, m.fee, m.stake, m.owner, m.name, m.tags, m.createdAt, m.isDeleted);
    }

    function getModelIds(uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return LibMarket.slice(LibMarket.layout().modelIds, offset_, limit_);
    }

    function getActiveModelIds(uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return LibMarket.slice(LibMarket.layout().activeModels.values, offset_, limit_);
    }

    function getModelMinimumStake() external view returns (uint256) {
        return LibMarket.layout().modelMinimumStake;
    }

    function getIsModelActive(bytes32 modelId_) public view returns (bool) {
        LibMarket.StoredModel storage m = LibMarket.layout().models[modelId_];
        return m.createdAt != 0 && !m.isDeleted;
    }

    // ----- bids -----
    function getBidId(address provider_, bytes32 modelId_, uint256 nonce_) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(provider_, modelId_, nonce_));
    }

    function getProviderModelId(address provider_, bytes32 modelId_) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(provider_, modelId_));
    }

    function postModelBid(address provider_, bytes32 modelId_, uint256 pricePerSecond_) external returns (bytes32 bidId) {
        LibMarket.enforceSelf(provider_);
        LibMarket.Layout storage s = LibMarket.layout();
        if (!getIsProviderActive(provider_)) revert MarketplaceProviderNotFound();
        if (!getIsModelActive(modelId_)) revert MarketplaceModelNotFound();
        if (pricePerSecond_ < s.bidMinPricePerSecond || pricePerSecond_ > s.bidMaxPricePerSecond) {
            revert MarketplaceBidPricePerSecondInvalid();
        }
        LibMarket.pull(provider_, s.bidFee);
        s.feeBalance += s.bidFee;

        bytes32 pairId = getProviderModelId(provider_, modelId_);
        uint256 nonce = s.providerModelNonce[pairId]++;
        if (nonce > 0) {
            bytes32 previous = getBidId(provider_, modelId_, nonce - 1);
            if (LibMarket.bidIsActive(s.bids[previous])) _deleteBid(s, previous);
        }
        bidId = getBidId(provider_, modelId_, nonce);
        uint256 index = s.bidCount++;
        s.bidIdAt[index] = bidId;
        s.bids[bidId] = LibMarket.StoredBid({
            provider: provider_,
            createdAt: uint48(block.timestamp),
            deletedAt: 0,
            modelId: modelId_,
            pricePerSecond: LibMarket.toUint128(pricePerSecond_),
            nonce: uint96(nonce),
            index: LibMarket.toUint32(index)
        });
        s.modelBids[modelId_].push(bidId);
        s.providerBids[provider_].push(bidId);
        s.modelActiveBids[modelId_].add(bidId);
        s.providerActiveBids[provider_].add(bidId);
        emit MarketplaceBidPosted(provider_, modelId_, nonce);
    }

    function deleteModelBid(bytes32 bidId_) external {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredBid storage bid = s.bids[bidId_];
        LibMarket.enforceSelf(bid.provider);
        if (!LibMarket.bidIsActive(bid)) revert MarketplaceActiveBidNotFound();
        _deleteBid(s, bidId_);
    }

    function _deleteBid(LibMarket.Layout storage s, bytes32 bidId) private {
        LibMarket.StoredBid storage bid = s.bids[bidId];
        bid.deletedAt = uint48(block.timestamp);
        s.modelActiveBids[bid.modelId].remove(bidId);
        s.providerActiveBids[bid.provider].remove(bidId);
        emit MarketplaceBidDeleted(bid.provider, bid.modelId, bid.nonce);
    }

    function getBid(bytes32 bidId_) external view returns (LibMarket.Bid memory) {
        LibMarket.StoredBid storage b = LibMarket.layout().bids[bidId_];
        return LibMarket.Bid(b.provider, b.modelId, b.pricePerSecond, b.nonce, b.createdAt, b.deletedAt);
    }

    function isBidActive(bytes32 bidId_) external view returns (bool) {
        return LibMarket.bidIsActive(LibMarket.layout().bids[bidId_]);
    }

    function getModelBids(bytes32 modelId_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return LibMarket.slice(LibMarket.layout().modelBids[modelId_], offset_, limit_);
    }

    function getProviderBids(address provider_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return LibMarket.slice(LibMarket.layout().providerBids[provider_], offset_, limit_);
    }

    function getModelActiveBids(bytes32 modelId_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return LibMarket.slice(LibMarket.layout().modelActiveBids[modelId_].values, offset_, limit_);
    }

    function getProviderActiveBids(address provider_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return LibMarket.slice(LibMarket.layout().providerActiveBids[provider_].values, offset_, limit_);
    }

    function getBidFee() external view returns (uint256) {
        return LibMarket.layout().bidFee;
    }

    function getFeeBalance() external view returns (uint256) {
        return LibMarket.layout().feeBalance;
    }

    function getMinMaxBidPricePerSecond() external view returns (uint256, uint256) {
        LibMarket.Layout storage s = LibMarket.layout();
        return (s.bidMinPricePerSecond, s.bidMaxPricePerSecond);
    }

    function getToken() external view returns (address) {
        return LibMarket.layout().token;
    }

    function owner() external view returns (address) {
        return LibMarket.layout().owner;
    }

    /// No delegation registry: rights are never delegated here.
    function isRightsDelegated(address, address, bytes32) external pure returns (bool) {
        return false;
    }

    function getRegistry() external pure returns (address) {
        return address(0);
    }

    // The live network's delegation rule ids (delegate.xyz rights), for callers that read them.
    function DELEGATION_RULES_PROVIDER() external pure returns (bytes32) {
        return keccak256("delegation.rules.provider");
    }

    function DELEGATION_RULES_MODEL() external pure returns (bytes32) {
        return keccak256("delegation.rules.model");
    }

    function DELEGATION_RULES_MARKETPLACE() external pure returns (bytes32) {
        return keccak256("delegation.rules.marketplace");
    }

    function DELEGATION_RULES_SESSION() external pure returns (bytes32) {
        return keccak256("delegation.rules.session");
    }
}
