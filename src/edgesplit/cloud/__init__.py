"""The stateless cloud server."""
