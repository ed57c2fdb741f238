"""Where the agent keeps its files: systemd's directories when set, else platformdirs."""

from __future__ import annotations

import os
from pathlib import Path

APP = "pos-agent"


def state_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("STATE_DIRECTORY") or platformdirs.user_state_path(APP))


def runtime_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("RUNTIME_DIRECTORY") or platformdirs.user_runtime_path(APP))
