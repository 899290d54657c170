"""medsamkit.server."""
