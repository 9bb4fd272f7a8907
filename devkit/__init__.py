"""Local development kit, never deployed: simulators, local stack, demo and CLI."""
