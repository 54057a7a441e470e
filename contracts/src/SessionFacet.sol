// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {LibMarket} from "./LibMarket.sol";

/// @notice Sessions, their economics (stake to stipend through the MOR emission pools), on-hold
/// stakes, provider payouts and the rating stats, behind the Diamond. Interface and observable
/// behaviour follow the live SessionRouter facet, with its known defects fixed:
/// the approval's user is checked, approval/receipt timestamps in milliseconds are understood
/// (so the signature TTL really applies), the raw receipt is not stored, and claimForProvider
/// never panics.
contract SessionFacet {
    using LibMarket for LibMarket.IndexList;

    event SessionOpened(address indexed user, bytes32 indexed sessionId, address indexed providerId);
    event SessionClosed(address indexed user, bytes32 indexed sessionId, address indexed providerId);
    event UserWithdrawn(address indexed user, uint256 amount_);

    error SessionApproveExpired();
    error SessionApprovedForAnotherChainId();
    error SessionApprovedForAnotherUser();
    error SessionReceiptExpired();
    error SessionReceiptForAnotherChainId();
    error SessionBidNotFound();
    error SessionProviderSignatureMismatch();
    error SessionDuplicateApproval();
    error SessionTooShort();
    error SessionStakeTooLow();
    error SessionAlreadyClosed();
    error SessionNotEndedOrNotExist();
    error SessionUserAmountToWithdrawIsZero();
    error SessionPoolIndexOutOfBounds();
    error SessionMaxDurationTooShort();
    error SessionRouterAlreadyInitialized();

    /// Flat, packed stats records (two slots each); the views return the live nested layout.
    struct StoredPairStats {
        int64 tpsMean;
        int64 tpsSqSum;
        int64 ttftMean;
        int64 ttftSqSum;
        uint32 totalDuration;
        uint32 successCount;
        uint32 totalCount;
    }

    struct StoredModelStats {
        int64 tpsMean;
        int64 tpsSqSum;
        int64 ttftMean;
        int64 ttftSqSum;
        int64 durationMean;
        int64 durationSqSum;
        uint32 count;
    }

    bytes32 private constant STATS_SLOT = keccak256("mor-workbench.marketplace.stats.v1");

    struct StatsLayout {
        mapping(bytes32 => mapping(address => StoredPairStats)) pairs;
        mapping(bytes32 => StoredModelStats) models;
    }

    function _stats() private pure returns (StatsLayout storage st) {
        bytes32 slot = STATS_SLOT;
        assembly {
            st.slot := slot
        }
    }

    // ----- administration -----
    function __SessionRouter_init(address fundingAccount_, uint128 maxSessionDuration_, LibMarket.Pool[] calldata pools_)
        external
    {
        LibMarket.enforceOwner();
        LibMarket.Layout storage s = LibMarket.layout();
        if (s.maxSessionDuration != 0) revert SessionRouterAlreadyInitialized(); // set (>= 300) once
        s.fundingAccount = fundingAccount_;
        setMaxSessionDuration(maxSessionDuration_);
        for (uint256 i; i < pools_.length; ++i) {
            s.pools.push(pools_[i]);
        }
    }

    function setMaxSessionDuration(uint128 maxSessionDuration_) public {
        LibMarket.enforceOwner();
        if (maxSessionDuration_ < LibMarket.MIN_SESSION_DURATION) revert SessionMaxDurationTooShort();
        LibMarket.layout().maxSessionDuration = maxSessionDuration_;
    }

    function setPoolConfig(uint256 index_, LibMarket.Pool calldata pool_) external {
        LibMarket.enforceOwner();
        LibMarket.Layout storage s = LibMarket.layout();
        if (index_ >= s.pools.length) revert SessionPoolIndexOutOfBounds();
        s.pools[index_] = pool_;
        s.dayCache.day = 0;
    }

    // ----- economics -----
    function startOfTheDay(uint128 timestamp_) public pure returns (uint128) {
        return timestamp_ - (timestamp_ % 1 days);
    }

    function _emitted(LibMarket.Pool storage p, uint256 t) private view returns (uint256) {
        uint256 start = p.payoutStart;
        uint256 interval = p.decreaseInterval;
        if (t <= start || interval == 0) return 0;
        uint256 r0 = p.initialReward;
        uint256 d = p.rewardDecrease;
        uint256 n = (t - start) / interval;
        uint256 rest = (t - start) % interval;
        if (d != 0) {
            uint256 paying = (r0 + d - 1) / d; // intervals with a positive reward
            if (n >= paying) return paying * r0 - (d * paying * (paying - 1)) / 2;
        }
        uint256 whole = n * r0 - (n == 0 ? 0 : (d * n * (n - 1)) / 2);
        return whole + ((r0 - n * d) * rest) / interval;
    }

    /// Emission of the compute pool and of all other pools up to `day`.
    function _emissions(uint256 day) private view returns (uint256 compute, uint256 other) {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.DayCache memory cache = s.dayCache;
        if (cache.day == day && day != 0) return (cache.computeEmitted, cache.otherEmitted);
        uint256 count = s.pools.length;
        for (uint256 i; i < count; ++i) {
            uint256 e = _emitted(s.pools[i], day);
            if (i == LibMarket.COMPUTE_POOL) compute = e;
            else other += e;
        }
    }

    /// Same as `_emissions`, remembering the day's values for the next transaction.
    function _emissionsCached(uint256 day) private returns (uint256 compute, uint256 other) {
        (compute, other) = _emissions(day);
        LibMarket.Layout storage s = LibMarket.layout();
        if (s.dayCache.day != day && compute <= type(uint96).max && other <= type(uint96).max) {
            s.dayCache = LibMarket.DayCache(uint64(day), uint96(compute), uint96(other));
        }
    }

    function _balanceAndSupply(uint256 compute, uint256 other) private view returns (uint256 balance, uint256 supply) {
        uint256 claimed = LibMarket.layout().providersTotalClaimed;
        balance = compute > claimed ? compute - claimed : 0;
        supply = other + claimed;
    }

    function getComputeBalance(uint128 timestamp_) public view returns (uint256 balance) {
        (uint256 compute, uint256 other) = _emissions(startOfTheDay(timestamp_));
        (balance,) = _balanceAndSupply(compute, other);
    }

    function totalMORSupply(uint128 timestamp_) public view returns (uint256 supply) {
        (uint256 compute, uint256 other) = _emissions(startOfTheDay(timestamp_));
        (, supply) = _balanceAndSupply(compute, other);
    }

    function getTodaysBudget(uint128 timestamp_) external view returns (uint256) {
        return getComputeBalance(timestamp_) / 100;
    }

    function _toStipend(uint256 amount, uint256 compute, uint256 other) private view returns (uint256) {
        (uint256 balance, uint256 supply) = _balanceAndSupply(compute, other);
        return supply == 0 ? 0 : (amount * balance) / (supply * 100);
    }

    function _toStake(uint256 stipend, uint256 compute, uint256 other) private view returns (uint256) {
        (uint256 balance, uint256 supply) = _balanceAndSupply(compute, other);
        return balance == 0 ? 0 : (stipend * supply * 100) / balance;
    }

    function stakeToStipend(uint256 amount_, uint128 timestamp_) external view returns (uint256) {
        (uint256 compute, uint256 other) = _emissions(startOfTheDay(timestamp_));
        return _toStipend(amount_, compute, other);
    }

    function stipendToStake(uint256 stipend_, uint128 timestamp_) external view returns (uint256) {
        (uint256 compute, uint256 other) = _emissions(startOfTheDay(timestamp_));
        return _toStake(stipend_, compute, other);
    }

    function _sessionEnd(uint256 amount, uint256 price, uint256 openedAt, uint256 compute, uint256 other)
        private
        view
        returns (uint256)
    {
        uint256 duration = _toStipend(amount, compute, other) / price;
        uint256 cap = LibMarket.layout().maxSessionDuration;
        return openedAt + (duration < cap ? duration : cap);
    }

    function getSessionEnd(uint256 amount_, uint256 pricePerSecond_, uint128 openedAt_) external view returns (uint128) {
        (uint256 compute, uint256 other) = _emissions(startOfTheDay(openedAt_));
        return uint128(_sessionEnd(amount_, pricePerSecond_, openedAt_, compute, other));
    }

    // ----- signatures -----
    function _recover(bytes memory payload, bytes calldata signature) private pure returns (address signer) {
        if (signature.length != 65) revert("ECDSA: invalid signature length");
        bytes32 r = bytes32(signature[0:32]);
        bytes32 sv = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if (uint256(sv) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0 || (v != 27 && v != 28)) {
            revert("ECDSA: invalid signature");
        }
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", keccak256(payload)));
        signer = ecrecover(digest, v, r, sv);
        if (signer == address(0)) revert("ECDSA: invalid signature");
    }

    /// Live routers sign approvals and receipts with millisecond timestamps; accept both units.
    function _seconds(uint256 timestamp) private pure returns (uint256) {
        return timestamp > 1e12 ? timestamp / 1000 : timestamp;
    }

    function getSessionId(address user_, address provider_, bytes32 bidId_, uint256 sessionNonce_)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked(user_, provider_, bidId_, sessionNonce_));
    }

    /// The session id of an approval: one approval can open exactly one session.
    function _approvalSession(bytes memory approval) private view returns (bytes32 sessionId, bytes32 bidId, uint256 chainId, address user, uint256 timestamp) {
        (bidId, chainId, user, timestamp) = abi.decode(approval, (bytes32, uint256, address, uint128));
        sessionId = getSessionId(user, LibMarket.layout().bids[bidId].provider, bidId, timestamp);
    }

    function getIsProviderApprovalUsed(bytes calldata approval_) external view returns (bool) {
        (bytes32 sessionId,,,,) = _approvalSession(approval_);
        return LibMarket.layout().sessions[sessionId].user != address(0);
    }

    // ----- sessions -----
    function openSession(
        address user_,
        uint256 amount_,
        bool isDirectPaymentFromUser_,
        bytes calldata approvalEncoded_,
        bytes calldata signature_
    ) external returns (bytes32 sessionId) {
        LibMarket.enforceSelf(user_);
        bytes32 bidId;
        (sessionId, bidId) = _checkApproval(user_, approvalEncoded_, signature_);
        _open(sessionId, bidId, user_, amount_, isDirectPaymentFromUser_);
    }

    /// The approval is for this chain and user, fresh, signed by the bid's provider, unused.
    function _checkApproval(address user, bytes calldata approval, bytes calldata signature)
        private
        view
        returns (bytes32 sessionId, bytes32 bidId)
    {
        uint256 chainId;
        address approvedUser;
        uint256 timestamp;
        (sessionId, bidId, chainId, approvedUser, timestamp) = _approvalSession(approval);
        if (chainId != block.chainid) revert SessionApprovedForAnotherChainId();
        if (approvedUser != user) revert SessionApprovedForAnotherUser();
        if (block.timestamp > _seconds(timestamp) + LibMarket.SIGNATURE_TTL) revert SessionApproveExpired();
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredBid storage bid = s.bids[bidId];
        if (!LibMarket.bidIsActive(bid)) revert SessionBidNotFound();
        if (_recover(approval, signature) != bid.provider) revert SessionProviderSignatureMismatch();
        if (s.sessions[sessionId].user != address(0)) revert SessionDuplicateApproval();
    }

    function _open(bytes32 sessionId, bytes32 bidId, address user, uint256 amount, bool isDirect) private {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredBid storage bid = s.bids[bidId];
        uint256 price = bid.pricePerSecond;
        (uint256 compute, uint256 other) = _emissionsCached(startOfTheDay(uint128(block.timestamp)));
        uint256 duration = _sessionEnd(amount, price, block.timestamp, compute, other) - block.timestamp;
        if (duration < LibMarket.MIN_SESSION_DURATION) revert SessionTooShort();
        if (isDirect && duration * price > amount) revert SessionStakeTooLow();
        LibMarket.toUint96(duration * price); // what the provider can earn fits its packed field

        LibMarket.pull(user, amount);
        LibMarket.StoredSession storage session = s.sessions[sessionId];
        session.user = user;
        session.openedAt = uint32(block.timestamp);
        session.endsAt = LibMarket.toUint32(block.timestamp + duration);
        session.isActive = true;
        session.isDirect = isDirect;
        session.stake = LibMarket.toUint96(amount);
        session.bidIndex = bid.index;

        address provider = bid.provider;
        uint256 index = s.sessionCount++;
        s.sessionIdAt[index] = sessionId;
        s.userSessions[user].push(index);
        s.providerSessions[provider].push(index);
        s.modelSessions[bid.modelId].push(index);
        emit SessionOpened(user, sessionId, provider);
    }

    function closeSession(bytes calldata receiptEncoded_, bytes calldata signature_) external {
        (bytes32 sessionId, uint256 chainId, uint128 timestamp, uint32 tpsScaled1000, uint32 ttftMs) =
            abi.decode(receiptEncoded_[0:160], (bytes32, uint256, uint128, uint32, uint32));
        if (chainId != block.chainid) revert SessionReceiptForAnotherChainId();
        if (block.timestamp > _seconds(timestamp) + LibMarket.SIGNATURE_TTL) revert SessionReceiptExpired();
        _close(sessionId, _recover(receiptEncoded_, signature_), tpsScaled1000, ttftMs);
    }

    /// What a close needs to know about its session, gathered once.
    struct Closing {
        address user;
        address provider;
        uint256 openedAt;
        uint256 price;
        uint256 end; // min(now, endsAt)
        uint256 usedSince; // max(openedAt, start of today)
        bool early;
        bool noDispute;
    }

    function _close(bytes32 sessionId, address signer, uint32 tpsScaled1000, uint32 ttftMs) private {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredSession storage session = s.sessions[sessionId];
        LibMarket.enforceSelf(session.user);
        if (session.closedAt != 0) revert SessionAlreadyClosed();
        LibMarket.StoredBid storage bid = s.bids[s.bidIdAt[session.bidIndex]];
        Closing memory c;
        c.user = session.user;
        c.provider = bid.provider;
        c.openedAt = session.openedAt;
        c.price = bid.pricePerSecond;
        c.early = block.timestamp < session.endsAt;
        c.end = c.early ? block.timestamp : session.endsAt;
        uint256 today = startOfTheDay(uint128(block.timestamp));
        c.usedSince = c.openedAt > today ? c.openedAt : today;
        c.noDispute = signer == c.provider;

        uint256 earned = (c.end - c.openedAt) * c.price;
        session.isActive = false;
        session.closedAt = uint32(block.timestamp);
        if (!c.noDispute) session.closeoutType = 1;

        // The user: the stake back, less the provider's pay when it came from the stake, less
        // the stipend used today (as stake), held until the next UTC midnight whenever the
        // session stopped today: an early close, or a natural close on the day of endsAt. The
        // live day-lock rule since Morpheus-Lumerin-Node #833/#835 (anchored to
        // min(closedAt, endsAt)); a close on a later day than endsAt holds nothing.
        uint256 userStake = session.stake - (session.isDirect ? earned : 0);
        uint256 lock;
        if (c.end >= today) {
            (uint256 compute, uint256 other) = _emissionsCached(today);
            lock = _toStake((c.end - c.usedSince) * c.price, compute, other);
            if (lock > userStake) lock = userStake;
            if (lock != 0) s.onHold[c.user].push(LibMarket.OnHold(uint128(lock), uint64(today + 1 days)));
        }
        LibMarket.pay(c.user, userStake - lock);

        // The provider: what the session earned; on a disputed early close, today's part waits.
        uint256 held = (!c.noDispute && c.early) ? (c.end - c.usedSince) * c.price : 0;
        held += session.providerWithdrawn; // already claimed after the session's end
        _payProvider(session, c.provider, earned > held ? earned - held : 0);
        _recordStats(bid.modelId, c.provider, c.noDispute, block.timestamp - c.openedAt, tpsScaled1000, ttftMs);
        emit SessionClosed(c.user, sessionId, c.provider);
    }

    function claimForProvider(bytes32 sessionId_) external {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredSession storage session = s.sessions[sessionId_];
        if (session.user == address(0)) revert SessionNotEndedOrNotExist();
        LibMarket.StoredBid storage bid = s.bids[s.bidIdAt[session.bidIndex]];
        LibMarket.enforceSelf(bid.provider);
        uint256 closedAt = session.closedAt;
        uint256 endsAt = session.endsAt;
        uint256 end = closedAt != 0 && closedAt < endsAt ? closedAt : endsAt;
        if (block.timestamp < end) return; // still running: nothing to claim yet
        uint256 earned = (end - session.openedAt) * bid.pricePerSecond;
        uint256 held;
        if (session.closeoutType == 1 && closedAt != 0 && closedAt < endsAt) {
            uint256 day = startOfTheDay(uint128(closedAt));
            if (block.timestamp < day + 1 days) {
                held = (closedAt - (session.openedAt > day ? session.openedAt : day)) * bid.pricePerSecond;
            }
        }
        uint256 owed = earned - session.providerWithdrawn;
        _payProvider(session, bid.provider, owed > held ? owed - held : 0);
    }

    /// Pay up to `amount`, within the provider's cap of its own stake per 365-day period.
    function _payProvider(LibMarket.StoredSession storage session, address provider, uint256 amount) private {
        if (amount == 0) return;
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredProvider storage p = s.providers[provider];
        uint256 earnedInPeriod = p.limitPeriodEarned;
        if (block.timestamp > p.limitPeriodEnd) {
            p.limitPeriodEnd = uint64(block.timestamp + LibMarket.REWARD_PERIOD);
            p.limitPeriodEarned = 0;
            earnedInPeriod = 0;
        }
        uint256 room = p.stake > earnedInPeriod ? p.stake - earnedInPeriod : 0;
        if (amount > room) amount = room;
        if (amount == 0) return;
        session.providerWithdrawn += uint96(amount);
        p.limitPeriodEarned = uint128(earnedInPeriod + amount); // at most the stake, a uint128
        s.providersTotalClaimed += amount;
        if (session.isDirect) LibMarket.pay(provider, amount);
        else LibMarket.payFrom(s.fundingAccount, provider, amount);
    }

    function withdrawUserStakes(address user_, uint8 iterations_) external {
        LibMarket.enforceSelf(user_);
        LibMarket.OnHold[] storage entries = LibMarket.layout().onHold[user_];
        uint256 amount;
        uint256 removed;
        uint256 i = entries.length;
        while (i > 0 && removed < iterations_) {
            --i;
            LibMarket.OnHold memory entry = entries[i];
            if (block.timestamp < entry.releaseAt) continue;
            amount += entry.amount;
            entries[i] = entries[entries.length - 1];
            entries.pop();
            ++removed;
        }
        if (amount == 0) revert SessionUserAmountToWithdrawIsZero();
        LibMarket.pay(user_, amount);
        emit UserWithdrawn(user_, amount);
    }

    function getUserStakesOnHold(address user_, uint8 iterations_) external view returns (uint256 available, uint256 hold) {
        LibMarket.OnHold[] storage entries = LibMarket.layout().onHold[user_];
        uint256 counted;
        for (uint256 i = entries.length; i > 0; --i) {
            LibMarket.OnHold memory entry = entries[i - 1];
            if (block.timestamp < entry.releaseAt) {
                hold += entry.amount;
            } else if (counted < iterations_) {
                available += entry.amount;
                ++counted;
            }
        }
    }

    // ----- stats (running mean and sum of squares, as the live contract keeps them) -----
    function _add(int64 mean, int64 sqSum, int256 x, int256 n) private pure returns (int64, int64) {
        int256 m = mean;
        int256 next = m + (x - m) / n;
        return (_clamp(next), _clamp(int256(sqSum) + (x - next) * (x - m)));
    }

    function _remove(int64 mean, int64 sqSum, int256 x, int256 n) private pure returns (int64, int64) {
        if (n == 0) return (0, 0);
        int256 m = mean;
        int256 next = m - (x - m) / n;
        return (_clamp(next), _clamp(int256(sqSum) - (x - next) * (x - m)));
    }

    /// Saturate instead of reverting: a griefer must not be able to block every close.
    function _clamp(int256 v) private pure returns (int64) {
        if (v > type(int64).max) return type(int64).max;
        if (v < type(int64).min) return type(int64).min;
        return int64(v);
    }

    function _recordStats(bytes32 modelId, address provider, bool noDispute, uint256 duration, uint32 tps, uint32 ttft)
        private
    {
        StatsLayout storage st = _stats();
        StoredPairStats memory pair = st.pairs[modelId][provider];
        pair.totalCount += 1;
        if (noDispute) {
            StoredModelStats memory model = st.models[modelId];
            if (pair.successCount > 0) {
                int256 others = int256(uint256(model.count)) - 1;
                (model.tpsMean, model.tpsSqSum) = _remove(model.tpsMean, model.tpsSqSum, pair.tpsMean, others);
                (model.ttftMean, model.ttftSqSum) = _remove(model.ttftMean, model.ttftSqSum, pair.ttftMean, others);
            } else {
                model.count += 1;
            }
            pair.successCount += 1;
            uint256 total = uint256(pair.totalDuration) + duration;
            pair.totalDuration = total > type(uint32).max ? type(uint32).max : uint32(total);
            int256 n = int256(uint256(pair.successCount));
            (pair.tpsMean, pair.tpsSqSum) = _add(pair.tpsMean, pair.tpsSqSum, int256(uint256(tps)), n);
            (pair.ttftMean, pair.ttftSqSum) = _add(pair.ttftMean, pair.ttftSqSum, int256(uint256(ttft)), n);
            int256 m = int256(uint256(model.count));
            (model.durationMean, model.durationSqSum) =
                _add(model.durationMean, model.durationSqSum, int256(uint256(pair.totalDuration)), m);
            (model.tpsMean, model.tpsSqSum) = _add(model.tpsMean, model.tpsSqSum, pair.tpsMean, m);
            (model.ttftMean, model.ttftSqSum) = _add(model.ttftMean, model.ttftSqSum, pair.ttftMean, m);
            st.models[modelId] = model;
        }
        st.pairs[modelId][provider] = pair;
    }

    function getProviderModelStats(bytes32 modelId_, address provider_) external view returns (LibMarket.ProviderModelStats memory) {
        StoredPairStats storage p = _stats().pairs[modelId_][provider_];
        return LibMarket.ProviderModelStats(
            LibMarket.SD(p.tpsMean, p.tpsSqSum), LibMarket.SD(p.ttftMean, p.ttftSqSum), p.totalDuration, p.successCount, p.totalCount
        );
    }

    function getModelStats(bytes32 modelId_) external view returns (LibMarket.ModelStats memory) {
        StoredModelStats storage m = _stats().models[modelId_];
        return LibMarket.ModelStats(
            LibMarket.SD(m.tpsMean, m.tpsSqSum), LibMarket.SD(m.ttftMean, m.ttftSqSum), LibMarket.SD(m.durationMean, m.durationSqSum), m.count
        );
    }

    // ----- session views -----
    function getSession(bytes32 sessionId_) external view returns (LibMarket.Session memory) {
        LibMarket.Layout storage s = LibMarket.layout();
        LibMarket.StoredSession storage x = s.sessions[sessionId_];
        return LibMarket.Session({
            user: x.user,
            bidId: x.user == address(0) ? bytes32(0) : s.bidIdAt[x.bidIndex],
            stake: x.stake,
            closeoutReceipt: "",
            closeoutType: x.closeoutType,
            providerWithdrawnAmount: x.providerWithdrawn,
            openedAt: x.openedAt,
            endsAt: x.endsAt,
            closedAt: x.closedAt,
            isActive: x.isActive,
            isDirectPaymentFromUser: x.isDirect
        });
    }

    function _ids(LibMarket.IndexList storage list, uint256 offset, uint256 limit) private view returns (bytes32[] memory out, uint256 total) {
        LibMarket.Layout storage s = LibMarket.layout();
        total = list.length();
        (uint256 start, uint256 count) = LibMarket.page(total, offset, limit);
        out = new bytes32[](count);
        for (uint256 i; i < count; ++i) {
            out[i] = s.sessionIdAt[list.at(start + i)];
        }
    }

    function getUserSessions(address user_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return _ids(LibMarket.layout().userSessions[user_], offset_, limit_);
    }

    function getProviderSessions(address provider_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return _ids(LibMarket.layout().providerSessions[provider_], offset_, limit_);
    }

    function getModelSessions(bytes32 modelId_, uint256 offset_, uint256 limit_) external view returns (bytes32[] memory, uint256) {
        return _ids(LibMarket.layout().modelSessions[modelId_], offset_, limit_);
    }

    function getTotalSessions(address provider_) external view returns (uint256) {
        return LibMarket.layout().providerSessions[provider_].length();
    }

    function getPools() external view returns (LibMarket.Pool[] memory) {
        return LibMarket.layout().pools;
    }

    function getPool(uint256 index_) external view returns (LibMarket.Pool memory) {
        LibMarket.Layout storage s = LibMarket.layout();
        if (index_ >= s.pools.length) revert SessionPoolIndexOutOfBounds();
        return s.pools[index_];
    }

    function getFundingAccount() external view returns (address) {
        return LibMarket.layout().fundingAccount;
    }

    function getProvidersTotalClaimed() external view returns (uint256) {
        return LibMarket.layout().providersTotalClaimed;
    }

    function getMaxSessionDuration() external view returns (uint128) {
        return LibMarket.layout().maxSessionDuration;
    }

    function MIN_SESSION_DURATION() external pure returns (uint32) {
        return uint32(LibMarket.MIN_SESSION_DURATION);
    }

    function SIGNATURE_TTL() external pure returns (uint32) {
        return uint32(LibMarket.SIGNATURE_TTL);
    }

    function COMPUTE_POOL_INDEX() external pure returns (uint256) {
        return LibMarket.COMPUTE_POOL;
    }
}
