"""medsamkit.evaluation."""
