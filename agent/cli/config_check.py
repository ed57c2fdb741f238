"""agent config check: the configuration in effect, validated as ``agent run`` does (the unit's
``ExecReload=`` runs it before the signal, so ``systemctl reload`` of a broken file fails).
Valid is exit 0, with warnings on stderr for what would not stop the agent but is likely a
mistake: a ``POS_AGENT_*`` variable that is no setting, a configuration others may change."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from agent.cli.common import (
    EXIT_OK,
    load_config,
)

# POS_AGENT_* variables that are not settings but are read by the agent or by what the project
# ships to run beside it: no warning for them.
NOT_SETTINGS = frozenset(
    {
        "POS_AGENT_STAGES",  # agent/stages.py: a benchmark's per-stage timings
        "POS_AGENT_EVENT",  # firmware_hooks: the event a hook runs for
        "POS_AGENT_PYZ_CACHE",  # packaging/zipapp: where the single-file build unpacks
        "POS_AGENT_COMMAND",  # packaging/ota: the agent the update scripts ask
        "POS_AGENT_HEALTH_GATE",  # packaging/ota: where the images install the gate
    }
)


def cmd_config_check(args: argparse.Namespace) -> int:
    import dataclasses

    from agent import paths
    from agent.config import DEFAULT_PATH

    config = load_config(args)
    overlay = paths.provisioning_path(config)
    print(f"configuration {config.source}: valid")
    if overlay.exists():
        print(f"re-provisioned values from {overlay} are laid over it")
    for section in dataclasses.fields(config):
        if section.name == "source":
            continue
        values = getattr(config, section.name)
        shown = ", ".join(
            f"{f.name}={_shown(f.name, getattr(values, f.name))}"
            for f in dataclasses.fields(values)
        )
        print(f"[{section.name}] {shown}")
    warnings = [*unknown_variables(os.environ), *changeable_by_others(args.config or DEFAULT_PATH)]
    for warning in warnings:
        print(f"agent config check: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def unknown_variables(environ: Mapping[str, str]) -> Iterator[str]:
    """A ``POS_AGENT_*`` variable that names no setting is ignored by ``agent run``: most often
    a typing error that leaves the setting it was meant for as the file has it."""
    from agent.config import ENV_PREFIX, PARSERS

    settings = {
        f"{section.upper()}_{key.upper()}": f"{section}.{key}"
        for section, keys in PARSERS.items()
        for key in keys
    }
    for name in sorted(environ):
        # any case: a shell does not change it, and the agent reads upper case only
        if not name.upper().startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :]
        if name.startswith(ENV_PREFIX) and rest in settings:
            continue
        # compared without the prefix, which every candidate shares
        closest = min(settings, key=lambda setting: _edits(rest.upper(), setting))
        hint = (
            f"did you mean {ENV_PREFIX}{closest} ({settings[closest]})?"
            if _edits(rest.upper(), closest) <= max(len(rest) // 3, 1)  # a third mistyped
            else f"settings are {ENV_PREFIX}<SECTION>_<KEY>, e.g. {ENV_PREFIX}HOST_PRIMARY"
        )
        yield f"{name} is not a setting the agent reads and is ignored; {hint}"


def _edits(typed: str, meant: str) -> int:
    """How many characters to insert, delete or replace to make ``typed`` into ``meant``
    (Levenshtein). Not difflib's: a separate package in Yocto's python3, which a terminal's
    image need not have."""
    # one row of the table at a time: edits from the typed letters so far to each start of meant
    costs = list(range(len(meant) + 1))
    for i, letter in enumerate(typed, start=1):
        diagonal, costs[0] = costs[0], i
        for j, wanted in enumerate(meant, start=1):
            replaced = diagonal + (letter != wanted)
            diagonal = costs[j]
            costs[j] = min(costs[j] + 1, costs[j - 1] + 1, replaced)
    return costs[-1]


def changeable_by_others(path: Path) -> Iterator[str]:
    """Who besides its owner may write the configuration file, or its directory (and so put
    another file in its place): whoever that is can point the agent at another host."""
    import stat

    real = path.resolve()
    targets = (
        (real, f"the configuration file {real}", "point the agent at another host"),
        (real.parent, f"the directory {real.parent} of the configuration file",
         "put another configuration in its place"),
    )  # fmt: skip
    for target, what, harm in targets:
        try:
            status = target.stat()
        except OSError:  # absent (an unprovisioned terminal's defaults) or unreadable
            continue
        if status.st_mode & stat.S_IWOTH:
            who = "everyone"
        elif status.st_mode & stat.S_IWGRP:
            who = f"group {_group_name(status.st_gid)}"
        else:
            continue
        yield (
            f"{what} (mode {stat.S_IMODE(status.st_mode):04o}) is writable by {who}, who could "
            f"{harm}; chmod go-w {target}"
        )


def _group_name(group_id: int) -> str:
    import grp

    try:
        return grp.getgrgid(group_id).gr_name
    except KeyError:  # a number /etc/group does not name
        return str(group_id)


def _shown(name: str, value: object) -> str:
    if value is None or value == "":
        return "-"
    if name.startswith("tpdu_"):
        return f"{value:04X}"
    if name in ("software_version", "header_category"):
        return f"{value:02X}"
    if name == "key_layout":
        return str(value or "auto")
    if name == "profile":
        return getattr(value, "name", str(value))
    return str(value)
