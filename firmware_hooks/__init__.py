"""Firmware hooks: how vendors extend the agent from their images (see README.md here)."""

from firmware_hooks.runner import EVENTS, HookResult, HookRunner, Outcome, TryLater

__all__ = ["EVENTS", "HookResult", "HookRunner", "Outcome", "TryLater"]
