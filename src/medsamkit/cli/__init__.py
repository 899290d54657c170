"""medsamkit.cli."""
