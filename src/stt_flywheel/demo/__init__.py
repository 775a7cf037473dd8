"""The demo world: synthetic speech, the general and new domains, production traffic, the tiny base model."""
