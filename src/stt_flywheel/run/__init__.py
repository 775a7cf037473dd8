"""A pipeline run: the trigger policy, one entry point per stage, and the run ledger."""
