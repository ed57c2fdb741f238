"""Damaged state files (DESIGN.md section 8): a journal, ``provisioning.json`` or
``parameters.json`` that cannot be read is moved aside whole as ``<name>.damaged-<UTC time>``,
never deleted (a journal may hold queued reversals that a person must settle), and the agent
starts afresh. While such a copy is there the self-check reports it; a technician moves it
away once it is settled."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent import paths

if TYPE_CHECKING:
    from agent.config import Config

MARK = ".damaged-"


def set_aside(path: Path, companions: tuple[str, ...] = ()) -> Path:
    """Rename ``path`` (and ``path`` + each suffix in ``companions`` that exists, such as
    SQLite's -wal and -shm) to the damaged name; returns the new name of ``path``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}{MARK}{stamp}")
    n = 1
    while aside.exists():  # two in one second: never overwrite an earlier copy
        n += 1
        aside = path.with_name(f"{path.name}{MARK}{stamp}-{n}")
    for suffix in companions:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    return aside


def copies(path: Path) -> list[Path]:
    """The damaged copies of ``path`` still beside it, oldest first (their SQLite companions
    not counted)."""
    if not path.parent.is_dir():
        return []
    found = path.parent.glob(f"{path.name}{MARK}*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


def state_copies(config: Config) -> list[Path]:
    """The damaged copies of the state files beside the journal (``provisioning.json``,
    ``parameters.json``), oldest first for each."""
    state = (paths.provisioning_path(config), paths.parameters_path(config))
    return [copy for path in state for copy in copies(path)]
