"""Run logs: cutting growing files into numbered chunks, shipping them, reading them back."""
