"""The evaluation loop, metrics, the matrix runner, the two-phase protocol and the CLI."""
