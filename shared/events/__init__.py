"""The event contract: topics and models."""
