"""agent config check: the configuration in effect, validated as ``agent run`` does."""

from __future__ import annotations

import argparse

from agent.cli.common import (
    EXIT_OK,
    load_config,
)


def cmd_config_check(args: argparse.Namespace) -> int:
    import dataclasses

    from agent import paths

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
    return EXIT_OK


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
