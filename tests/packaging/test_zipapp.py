"""pos-agent.pyz from packaging/zipapp/build.py runs with Python alone.

"Python alone": the base interpreter (not this venv), isolated (-I: no PYTHON* variables, no user
site, not the current folder) and without site-packages (-S), from an empty folder with an empty
environment. So the agent, pyiso8583, pyserial, tenacity and platformdirs can only come from the
archive.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.packaging.common import build_script, build_version, run

# the venv's python is a link to the interpreter it was made from
BASE_PYTHON = os.path.realpath(sys.executable)


@pytest.fixture(scope="module")
def version() -> str:
    """The version the archive must say (taken just before the build)."""
    return build_version()


@pytest.fixture(scope="module")
def pyz(version: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built after ``version`` was taken."""
    return build_script("zipapp/build.py", "--out", tmp_path_factory.mktemp("pyz"))


@pytest.fixture(scope="module")
def native_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_script(
        "zipapp/build.py", "--with-native", "--out", tmp_path_factory.mktemp("native-pyz")
    )


def python_alone(archive: Path, *args: str, cwd: Path, check: bool = True, **env: str):
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", **env}
    return run(BASE_PYTHON, "-I", "-S", archive, *args, env=clean, cwd=cwd, check=check)


def test_runs_version_and_explain_97(pyz: Path, version: str, tmp_path: Path) -> None:
    says = python_alone(pyz, "--version", cwd=tmp_path)
    assert says.stdout.strip() == f"pos-agent {version}"
    explain = python_alone(pyz, "explain", "97", cwd=tmp_path)
    assert explain.stdout.startswith("97  终端未登记")
    assert "terminal not registered" in explain.stdout


def test_is_one_portable_file(pyz: Path) -> None:
    assert pyz.name == "pos-agent.pyz"
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(pyz, os.X_OK)
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names
    for package in ("agent", "drivers", "firmware_hooks", "iso8583", "serial", "tenacity"):
        assert f"{package}/__init__.py" in names, package
    assert "platformdirs/__init__.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyc")) or n.startswith("_native/")]
    print(f"{pyz.name}: {pyz.stat().st_size / 1e3:.0f} kB")


CONFIG = """
[terminal]
tid = "10000001"
mid = "898100012340001"
[host]
primary = "127.0.0.1:9"
[module]
url = "/nonexistent/card-module"
"""


def test_says_what_is_missing_for_commands_needing_cryptography(pyz: Path, tmp_path: Path) -> None:
    """The agent itself holds no key (the card module MACs); only the simulators, and so the
    demo, compute DES in software."""
    for command in (["demo"], ["sim", "host", "--listen", "127.0.0.1:0"], ["sim", "module"]):
        result = python_alone(pyz, *command, cwd=tmp_path, check=False)
        assert result.returncode == 2, command
        assert "cryptography (43 or later)" in result.stderr
        assert "pip install 'pos-agent[sim]'" in result.stderr
        assert "Traceback" not in result.stderr


def test_native_build_runs_the_demo(native_pyz: Path, tmp_path: Path) -> None:
    """With this machine's cryptography inside, the simulators run with Python alone; the
    compiled part is unpacked once into the cache folder."""
    cache = tmp_path / "cache"
    result = python_alone(native_pyz, "demo", cwd=tmp_path, POS_AGENT_PYZ_CACHE=str(cache))
    assert "Traceback" not in result.stderr
    (unpacked,) = cache.iterdir()
    assert unpacked.name.startswith(sys.implementation.cache_tag)
    assert list(unpacked.glob("cryptography/hazmat/bindings/_rust*.so"))
    print(f"{native_pyz.name} --with-native: {native_pyz.stat().st_size / 1e6:.1f} MB")


def test_portable_build_runs_the_service(pyz: Path, tmp_path: Path) -> None:
    """What a terminal runs, with Python alone and no compiled module: `agent run` tells
    systemd READY=1 (over a stand-in NOTIFY_SOCKET), serves its sockets, and stops cleanly on
    SIGTERM."""
    (tmp_path / "agent.toml").write_text(CONFIG)
    for folder in ("state", "run"):
        (tmp_path / folder).mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(env["NOTIFY_SOCKET"])
        notify.settimeout(30)
        agent = subprocess.Popen(
            [BASE_PYTHON, "-I", "-S", str(pyz), "run", "--config", "agent.toml"],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            messages = []
            while not any("READY=1" in m for m in messages):
                messages.append(notify.recv(4096).decode())
            assert sorted(os.listdir(tmp_path / "run")) == [
                "agent.sock",
                "agent.sock.lock",  # one agent per socket (DESIGN.md section 8)
                "control.sock",
                "module.sock",
            ]
        finally:
            agent.send_signal(signal.SIGTERM)
            _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
