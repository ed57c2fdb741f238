"""The configuration in effect (DESIGN.md section 13: reload by rebuilding options). One holder
that every part reads at each use, so a reload (SIGHUP) or a re-provisioning replaces the
configuration in one step, never attribute by attribute. What only a restart can change (the
sockets, the journal, the serial line, telemetry) stays as the service started with it, and
that is said."""

from __future__ import annotations

import dataclasses
import logging

from agent.config import Config

log = logging.getLogger(__name__)

# Sections the service builds its listeners, journal and telemetry from, once.
AT_RESTART = ("gateway", "journal", "control", "telemetry")
# Settings of the module section the serial line and its socket are opened with, once.
MODULE_AT_RESTART = ("url", "baudrate", "socket", "driver")


class Settings:
    def __init__(self, config: Config) -> None:
        self._config = config

    def __call__(self) -> Config:
        return self._config

    def replace(self, config: Config) -> list[str]:
        """Run with ``config`` from now on; returns the sections that changed. Settings that
        need a restart are kept as started, and logged."""
        old = self._config
        changed = [
            section.name
            for section in dataclasses.fields(config)
            if section.name != "source"
            and getattr(config, section.name) != getattr(old, section.name)
        ]
        at_restart = [name for name in AT_RESTART if name in changed]
        module = {name: getattr(old.module, name) for name in MODULE_AT_RESTART}
        if any(getattr(config.module, name) != value for name, value in module.items()):
            at_restart.append("module." + "/".join(MODULE_AT_RESTART))
        if at_restart:
            log.warning("changed settings take effect at restart: %s", ", ".join(at_restart))
        self._config = dataclasses.replace(
            config,
            **{name: getattr(old, name) for name in AT_RESTART},
            module=dataclasses.replace(config.module, **module),
        )
        return changed
