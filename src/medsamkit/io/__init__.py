"""medsamkit.io."""
