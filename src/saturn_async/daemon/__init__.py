"""The supervisor as a long-running service: journal, control socket, spool, recovery."""
