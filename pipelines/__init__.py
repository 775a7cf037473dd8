"""The flywheel pipeline graph, compilation, local runs and the operator CLI."""
