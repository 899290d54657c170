"""medsamkit.training."""
