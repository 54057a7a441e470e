// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {LibMarket} from "./LibMarket.sol";

/// @notice One address for the whole marketplace: routes each selector to its facet with
/// delegatecall, so the facets share this contract's storage (a minimal diamond, fixed at deploy).
contract Diamond {
    struct FacetCut {
        address facet;
        bytes4[] selectors;
    }

    error FunctionDoesNotExist(bytes4 selector);
    error SelectorAlreadyRouted(bytes4 selector);

    bytes32 private constant ROUTES_SLOT = keccak256("mor-workbench.diamond.routes.v1");

    constructor(address owner_, FacetCut[] memory cuts_) {
        LibMarket.layout().owner = owner_;
        mapping(bytes4 => address) storage routes = _routes();
        for (uint256 i; i < cuts_.length; ++i) {
            for (uint256 j; j < cuts_[i].selectors.length; ++j) {
                bytes4 selector = cuts_[i].selectors[j];
                if (routes[selector] != address(0)) revert SelectorAlreadyRouted(selector);
                routes[selector] = cuts_[i].facet;
            }
        }
    }

    function _routes() private pure returns (mapping(bytes4 => address) storage routes) {
        bytes32 slot = ROUTES_SLOT;
        assembly {
            routes.slot := slot
        }
    }

    /// The facet that serves `selector` (zero if none): a one-function loupe.
    function facetAddress(bytes4 selector) external view returns (address) {
        return _routes()[selector];
    }

    fallback() external {
        address facet = _routes()[msg.sig];
        if (facet == address(0)) revert FunctionDoesNotExist(msg.sig);
        assembly {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), facet, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            switch ok
            case 0 { revert(0, returndatasize()) }
            default { return(0, returndatasize()) }
        }
    }
}
