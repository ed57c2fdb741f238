"""Simulators of the acquirer host and the TMS, for tests, the demo and bench work."""
