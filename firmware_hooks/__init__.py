"""Firmware hooks: how vendors extend the agent from their images."""
