"""Shared by the packaging tests: where packaging/ is, the tools they need, the unit file read."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
UNIT = PACKAGING / "systemd" / "pos-agent.service"
DEFAULT_CONFIG = PACKAGING / "config" / "agent.toml"
HOOKS_README = PACKAGING / "config" / "hooks.d" / "README"


def require(tool: str, package: str) -> str:
    """The tool's path; a missing tool fails the test (.ci/run installs them all), never skips."""
    path = shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/sbin") / tool) if p.exists()), None
    )
    if path is None:
        pytest.fail(f"{tool} is not installed: apt-get install {package} (.ci/run does)")
    return path


def run(
    *command: str | Path, timeout: float = 300, check: bool = True, **kwargs
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True, text=True, timeout=timeout, check=False, **kwargs,
    )  # fmt: skip
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@cache
def buildtools() -> ModuleType:
    """packaging/buildtools.py, the module every build script shares (not a package: loaded from
    its file, as the scripts put packaging/ on sys.path)."""
    spec = importlib.util.spec_from_file_location("buildtools", PACKAGING / "buildtools.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("buildtools", module)
    spec.loader.exec_module(module)
    return module


def build_version() -> str:
    """What an artefact built from this tree now must report: the release at its own commit,
    else <release>+g<commit>[.dirty] (buildtools.describe; tests/unit/test_version.py tests the
    rules on repositories of its own). Taken just before a build: a commit made meanwhile
    (another engineer's) would change it."""
    return buildtools().describe(ROOT).full


def build_script(relative: str, *args: str | Path) -> Path:
    """Run packaging/<relative> with this interpreter; the path it prints last."""
    result = run(sys.executable, PACKAGING / relative, *args)
    return Path(result.stdout.strip().splitlines()[-1])


def unit_directives(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; repeated keys stay repeated."""
    entries, section = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(key: str, path: Path = UNIT) -> list[str]:
    return [value for _, k, value in unit_directives(path) if k == key]


def unit_value(key: str, path: Path = UNIT) -> str:
    values = unit_values(key, path)
    assert len(values) == 1, f"{path.name}: {key}= set {len(values)} times: {values}"
    return values[0]


def hook_events_in_readme() -> list[str]:
    """The event folders the hooks README lists ("  name/   what it is for")."""
    text = HOOKS_README.read_text(encoding="utf-8")
    return re.findall(r"^  ([a-z0-9-]+)/ ", text, re.MULTILINE)
