"""Where the agent keeps its files: a path in the configuration; else systemd's directories
(``$STATE_DIRECTORY``, ``$RUNTIME_DIRECTORY``) when set; else the service's own directories when
they exist, so a technician's ``agent selftest`` in a login shell finds the running service's
journal and sockets; else platformdirs (a developer's machine)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config

APP = "pos-agent"
SERVICE_STATE = Path("/var/lib/pos-agent")
SERVICE_RUNTIME = Path("/run/pos-agent")


def _choose(variable: str, service: Path, user: str) -> Path:
    if os.environ.get(variable):
        return Path(os.environ[variable])
    if service.is_dir():
        return service
    import warnings

    import platformdirs

    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs' fallback is fine here
        warnings.simplefilter("ignore")
        return Path(getattr(platformdirs, user)(APP))


def state_dir() -> Path:
    return _choose("STATE_DIRECTORY", SERVICE_STATE, "user_state_path")


def runtime_dir() -> Path:
    return _choose("RUNTIME_DIRECTORY", SERVICE_RUNTIME, "user_runtime_path")


def journal_path(config: Config) -> Path:
    return Path(config.journal.path) if config.journal.path else state_dir() / "journal.sqlite3"


def provisioning_path(config: Config) -> Path:
    """What re-provisioning learnt, beside the journal: it belongs to this terminal's state."""
    return journal_path(config).parent / "provisioning.json"


def parameters_path(config: Config) -> Path:
    """What the session downloads brought (DESIGN.md section 16), beside the journal."""
    return journal_path(config).parent / "parameters.json"


def payment_socket(config: Config) -> Path:
    return Path(config.gateway.socket) if config.gateway.socket else runtime_dir() / "agent.sock"


def module_socket(config: Config) -> Path:
    return Path(config.module.socket) if config.module.socket else runtime_dir() / "module.sock"


def control_socket(config: Config) -> Path:
    return Path(config.control.socket) if config.control.socket else runtime_dir() / "control.sock"
