"""medsamkit.data."""
