"""medsamkit.inference."""
