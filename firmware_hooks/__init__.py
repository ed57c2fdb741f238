"""Firmware hooks: how vendors extend the agent from their images (see README.md here).

The runner's names are imported when first asked for: the agent looks first (``declared``, and
the hooks directory) whether any hook exists, and a terminal without hooks never loads them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_hooks.runner import EVENTS, HookResult, HookRunner, Outcome, TryLater

__all__ = ["EVENTS", "HookResult", "HookRunner", "Outcome", "TryLater"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from firmware_hooks import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'firmware_hooks' has no attribute {name!r}")
