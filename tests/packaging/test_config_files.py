"""The files every package installs in /etc/pos-agent: the default agent.toml and the hooks README
say what the agent really reads."""

from __future__ import annotations

import dataclasses
import re
import tomllib

from tests.packaging.common import DEFAULT_CONFIG, HOOKS_README, hook_events_in_readme

SETTING = re.compile(r"^#([a-z_]+) = ", re.MULTILINE)


def test_default_config_is_the_defaults() -> None:
    """As shipped, the file sets nothing: a fresh terminal is unprovisioned, not broken."""
    from agent.config import build, load

    shipped = load(DEFAULT_CONFIG, env={})
    defaults = build({}, "defaults", env={})
    assert dataclasses.replace(shipped, source="defaults") == defaults


def test_every_documented_setting_is_real_and_its_example_valid() -> None:
    """Uncommenting every "#key = value" line gives a configuration the agent accepts: no
    misspelt key, no example the validation would refuse."""
    from agent.config import PARSERS, build

    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    uncommented = SETTING.sub(lambda match: match.group(0)[1:], text)
    raw = tomllib.loads(uncommented)
    build(raw, str(DEFAULT_CONFIG), env={})
    assert set(raw) <= set(PARSERS)
    documented = sum(len(section) for section in raw.values())
    assert documented == len(SETTING.findall(text)) >= 20


def test_hooks_readme_lists_the_runners_events() -> None:
    from firmware_hooks.runner import EVENTS, EXIT_TRY_LATER, SKIPPED_SUFFIXES

    assert hook_events_in_readme() == list(EVENTS)
    text = HOOKS_README.read_text(encoding="utf-8")
    assert f"{EXIT_TRY_LATER}: try" in text
    for suffix in SKIPPED_SUFFIXES:
        assert f'"{suffix}"' in text
