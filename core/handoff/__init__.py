"""Human handoff: the per-conversation state machine and the desk operators work from."""
