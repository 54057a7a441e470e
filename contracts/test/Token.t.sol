// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Base} from "./Base.sol";
import {MorpheusToken} from "../src/MorpheusToken.sol";

contract TokenTest is Base {
    MorpheusToken internal mor;
    address internal alice = vm.addr(0xA);
    address internal bob = vm.addr(0xB);

    function setUp() public override {
        mor = new MorpheusToken(1_000 * MOR);
    }

    function test_metadataAndSupplyMintedToTheDeployer() public view {
        assertTrue(keccak256(bytes(mor.name())) == keccak256("Morpheus"), "name");
        assertTrue(keccak256(bytes(mor.symbol())) == keccak256("MOR"), "symbol");
        assertEq(mor.decimals(), 18, "decimals");
        assertEq(mor.totalSupply(), 1_000 * MOR, "supply");
        assertEq(mor.INITIAL_SUPPLUY(), 1_000 * MOR, "initial supply (live spelling)");
        assertEq(mor.balanceOf(address(this)), 1_000 * MOR, "minted to the deployer");
    }

    function test_deployEmitsTheMint() public {
        vm.expectEmit();
        emit MorpheusToken.Transfer(address(0), address(this), 5);
        new MorpheusToken(5);
    }

    function test_transferMovesBalanceAndEmits() public {
        vm.expectEmit(address(mor));
        emit MorpheusToken.Transfer(address(this), alice, 10);
        assertTrue(mor.transfer(alice, 10), "returns true");
        assertEq(mor.balanceOf(alice), 10, "received");
        assertEq(mor.balanceOf(address(this)), 1_000 * MOR - 10, "sent");
    }

    function test_transferRefusesOverdraftAndTheZeroAddress() public {
        vm.expectRevert(bytes("ERC20: transfer amount exceeds balance"));
        mor.transfer(alice, 1_000 * MOR + 1);
        vm.expectRevert(bytes("ERC20: transfer to the zero address"));
        mor.transfer(address(0), 1);
    }

    function test_approveAndTransferFromSpendTheAllowance() public {
        vm.expectEmit(address(mor));
        emit MorpheusToken.Approval(address(this), alice, 100);
        assertTrue(mor.approve(alice, 100), "approve returns true");
        vm.prank(alice);
        assertTrue(mor.transferFrom(address(this), bob, 60), "transferFrom returns true");
        assertEq(mor.allowance(address(this), alice), 40, "allowance spent");
        assertEq(mor.balanceOf(bob), 60, "moved");
        vm.prank(alice);
        vm.expectRevert(bytes("ERC20: insufficient allowance"));
        mor.transferFrom(address(this), bob, 41);
    }

    function test_infiniteAllowanceIsNotSpent() public {
        mor.approve(alice, type(uint256).max);
        vm.prank(alice);
        mor.transferFrom(address(this), bob, 7);
        assertEq(mor.allowance(address(this), alice), type(uint256).max, "still infinite");
    }

    function test_increaseAndDecreaseAllowance() public {
        mor.increaseAllowance(alice, 5);
        mor.increaseAllowance(alice, 5);
        assertEq(mor.allowance(address(this), alice), 10, "increased");
        mor.decreaseAllowance(alice, 4);
        assertEq(mor.allowance(address(this), alice), 6, "decreased");
        vm.expectRevert(bytes("ERC20: decreased allowance below zero"));
        mor.decreaseAllowance(alice, 7);
    }

    function testFuzz_transfersConserveSupply(uint256 a, uint256 b) public {
        a = a % (1_000 * MOR + 1);
        mor.transfer(alice, a);
        b = b % (a + 1);
        vm.prank(alice);
        mor.transfer(bob, b);
        assertEq(mor.balanceOf(address(this)) + mor.balanceOf(alice) + mor.balanceOf(bob), mor.totalSupply(), "conserved");
        assertEq(mor.balanceOf(bob), b, "bob");
    }
}
