"""medsamkit.models."""
