"""A sweep: config and grid layout, the cube store, the chunk runner, cost estimates."""
