"""A user's own package: networks that prunelab trains and prunes through its configs."""
