"""Whether any entry-point hook may be installed at all, found without importlib.metadata and
without the hook runner: the agent asks it before loading either (a terminal without hooks keeps
neither in memory, nor starts a child interpreter to list none)."""

from __future__ import annotations

import os
from collections.abc import Iterable

GROUP = "pos_agent.hooks"  # the entry-point group of hooks (python_hooks)


def may_declare(paths: Iterable[str]) -> bool:
    """Whether a distribution on ``paths`` may declare an entry point of the group: its
    ``entry_points.txt`` names the group. Most terminals have none, and then no child process
    is started at all (a second interpreter's start, about 0.1 s of the terminal's CPU, right
    when the service starts and signs in). What cannot be looked into this way (a zip archive
    on the path) is left to the child."""
    for entry in paths:
        try:
            with os.scandir(entry or ".") as found:
                folders = [e.path for e in found if _metadata_folder(e.name)]
        except (FileNotFoundError, PermissionError):
            continue  # nothing importable there either
        except OSError:
            return True  # an archive: importlib.metadata reads it, this does not
        for folder in folders:
            try:
                with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as text:
                    if any(_names_the_group(line) for line in text):
                        return True
            except (OSError, UnicodeDecodeError):
                continue
    return False


def _metadata_folder(name: str) -> bool:
    """Where importlib.metadata finds a distribution's entry_points.txt on a path entry: its
    .dist-info or .egg-info folder, or the EGG-INFO of an unzipped .egg on the path."""
    return name.endswith((".dist-info", ".egg-info")) or name == "EGG-INFO"


def _names_the_group(line: str) -> bool:
    """A section header of ``entry_points.txt`` (as importlib.metadata reads it) for GROUP."""
    line = line.strip()
    return line.startswith("[") and line.endswith("]") and line[1:-1].strip() == GROUP
