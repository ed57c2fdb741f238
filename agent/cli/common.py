"""What the commands share: exit codes, the usage error, the configuration and the running
agent's control socket."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config
    from agent.wire.profile import Profile

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_NOT_RUNNING = 3  # agent status: as systemctl status for a unit that is not active
DEFAULT_CONFIG = "/etc/pos-agent/agent.toml"


class UsageError(Exception):
    """Bad input from the person at the keyboard: printed as one line, exit 2."""


def load_config(args: argparse.Namespace, *, service: bool = False) -> Config:
    """The configuration file, with what re-provisioning saved laid over it (by the service,
    ``service``, a damaged saved file is moved aside)."""
    from agent import paths, provisioning
    from agent.config import ConfigError, load

    try:
        config = load(args.config)
        return provisioning.effective(config, paths.provisioning_path(config), service=service)
    except (ConfigError, provisioning.ProvisioningError) as exc:
        raise UsageError(str(exc)) from None


def control_path(config: Config) -> Path:
    from agent import paths

    return paths.control_socket(config)


def ask_agent(config: Config, request: dict[str, object]) -> dict[str, object] | None:
    """The running agent's answer over its control socket, or None when none is running."""
    from agent import paths
    from agent.service import control

    try:
        return control.request(paths.control_socket(config), request)
    except control.NotRunning:
        return None
    except control.ControlError as exc:
        raise UsageError(str(exc)) from None


def not_permitted(path: object) -> str:
    """What a technician's command may not read, and who may (the service's state is open to
    its technicians' group to read, DESIGN.md section 10)."""
    from agent.service.control import TECHNICIAN_GROUP

    return f"{path}: permission denied (root and members of group {TECHNICIAN_GROUP} may read it)"


def state_dir() -> Path:
    from agent import paths

    return paths.state_dir()


def wire_profile(args: argparse.Namespace) -> Profile:
    """The wire profile of ``--profile``, or the built-in CUP one."""
    from agent.wire.profile import CUP, ProfileError, load_profile

    if args.profile is None:
        return CUP
    try:
        return load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(f"--profile: {exc}") from None


def listen_endpoint(text: str) -> tuple[str, int]:
    from agent.config import parse_endpoint

    try:
        endpoint = parse_endpoint(text, listening=True)
    except ValueError as exc:
        raise UsageError(f"--listen {text!r}: {exc}") from None
    if endpoint is None:
        raise UsageError("--listen needs HOST:PORT")
    return endpoint.host, endpoint.port
