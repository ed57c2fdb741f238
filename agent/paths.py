"""Where the agent keeps its files: systemd's directories when set, else platformdirs; a path in
the configuration wins over both."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config

APP = "pos-agent"


def state_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("STATE_DIRECTORY") or platformdirs.user_state_path(APP))


def runtime_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("RUNTIME_DIRECTORY") or platformdirs.user_runtime_path(APP))


def journal_path(config: Config) -> Path:
    return Path(config.journal.path) if config.journal.path else state_dir() / "journal.sqlite3"


def provisioning_path(config: Config) -> Path:
    """What re-provisioning learnt, beside the journal: it belongs to this terminal's state."""
    return journal_path(config).parent / "provisioning.json"


def payment_socket(config: Config) -> Path:
    return Path(config.gateway.socket) if config.gateway.socket else runtime_dir() / "agent.sock"


def control_socket(config: Config) -> Path:
    return Path(config.control.socket) if config.control.socket else runtime_dir() / "control.sock"
