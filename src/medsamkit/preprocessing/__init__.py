"""medsamkit.preprocessing."""
