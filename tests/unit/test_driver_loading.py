"""Module drivers by entry point (DESIGN.md section 12): real distributions on sys.path, found
by importlib.metadata in a child process as the service finds them; every problem one line."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.config import ConfigError, build
from drivers.loading import BUILTIN, BUILTIN_VALUE, GROUP, DriverError, module_driver, open_module
from drivers.module import ModuleSettings
from drivers.serial_module import SerialCardModule

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ModuleSettings(url="/dev/ttyUSB7", baudrate=9600)

VENDOR_MODULE = """
from drivers.serial_module import SerialCardModule

print("a vendor module that talks at import")
NOT_CALLABLE = 42


def good(settings):
    return SerialCardModule(settings.url, baudrate=settings.baudrate)


def refuses(settings):
    raise ValueError(f"no SDK device at {settings.url}")


def wrong_type(settings):
    return object()
"""


@pytest.fixture
def distribution(tmp_path, monkeypatch):
    """``install(name, entry_points)``: a real distribution declaring these drivers, with the
    vendor module beside it, where importlib.metadata finds it."""
    installed: list[str] = []

    def install(name: str, entry_points: dict[str, str]) -> None:
        # a site directory of its own each time: importlib.metadata caches directory listings
        site = tmp_path / f"site-{name}"
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "".join(f"{driver} = {value}\n" for driver, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")
        (site / "vendor_driver.py").write_text(VENDOR_MODULE)
        monkeypatch.syspath_prepend(str(site))
        installed.append(name)

    yield install
    sys.modules.pop("vendor_driver", None)


def test_the_builtin_driver_is_the_one_pyproject_registers_first() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    drivers = project["project"]["entry-points"][GROUP]
    assert next(iter(drivers.items())) == (BUILTIN, BUILTIN_VALUE)


def test_the_builtin_driver_needs_no_metadata(monkeypatch) -> None:
    """The service with the default driver never lists entry points (nor could a source tree)."""

    def no_child(*args, **kwargs):
        raise AssertionError("the built-in driver was looked up in a child process")

    monkeypatch.setattr(subprocess, "run", no_child)
    module = open_module(BUILTIN, SETTINGS)
    assert isinstance(module, SerialCardModule)
    assert (module.url, module.baudrate) == ("/dev/ttyUSB7", 9600)
    assert module_driver(" serial ") == "serial"


def test_finding_drivers_leaves_importlib_metadata_out_of_the_process(distribution) -> None:
    distribution("acme-driver", {"acme": "vendor_driver:good"})
    script = (
        "import sys\n"
        "from drivers.loading import open_module\n"
        "from drivers.module import ModuleSettings\n"
        "open_module('acme', ModuleSettings(url='/dev/null'))\n"
        "print(sorted(m for m in ('email', 'importlib.metadata', 'zipfile') if m in sys.modules))\n"
    )
    path = ":".join(sys.path)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60,
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_an_installed_driver_opens_the_module(distribution) -> None:
    distribution("acme-driver", {"acme": "vendor_driver:good"})
    module = open_module("acme", SETTINGS)
    assert isinstance(module, SerialCardModule) and module.url == "/dev/ttyUSB7"
    assert module_driver("acme") == "acme"


def test_an_unknown_driver_names_the_installed_ones(distribution) -> None:
    distribution("acme-driver", {"acme": "vendor_driver:good", "zeta": "vendor_driver:good"})
    message = "no module driver 'x': installed drivers are serial, acme, zeta"
    with pytest.raises(DriverError, match=f"^{message}$"):
        open_module("x", SETTINGS)
    with pytest.raises(ValueError, match=f"^{message}$"):
        module_driver("x")


def test_another_distribution_cannot_take_the_builtin_name(distribution) -> None:
    distribution("impostor", {"serial": "vendor_driver:wrong_type"})
    assert isinstance(open_module("serial", SETTINGS), SerialCardModule)
    with pytest.raises(DriverError, match=r"installed drivers are serial$"):
        open_module("x", SETTINGS)


def test_a_name_two_distributions_declare_is_refused(distribution) -> None:
    distribution("acme-one", {"acme": "vendor_driver:good"})
    distribution("acme-two", {"acme": "vendor_driver:refuses"})
    with pytest.raises(DriverError, match=r"'acme' is declared 2 times, as vendor_driver:good, "):
        open_module("acme", SETTINGS)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("vendor_driver:absent", "cannot be loaded: AttributeError: "),
        ("no_such_vendor:good", "cannot be loaded: ModuleNotFoundError: No module named "),
        ("vendor_driver:NOT_CALLABLE", "is int, not a callable factory"),
    ],
)
def test_a_driver_that_does_not_load_is_one_line_naming_it(distribution, value, problem) -> None:
    distribution("acme-driver", {"acme": value})
    with pytest.raises(DriverError, match=f"^module driver 'acme' \\({value}\\) {problem}"):
        open_module("acme", SETTINGS)
    # the configuration finds it out in a child process, before the service starts
    with pytest.raises(ValueError, match=f"^module driver 'acme' \\({value}\\): {value} {problem}"):
        module_driver("acme")


def test_a_factory_that_fails_or_returns_no_module(distribution) -> None:
    distribution("acme", {"acme": "vendor_driver:refuses", "odd": "vendor_driver:wrong_type"})
    with pytest.raises(
        DriverError,
        match=r"^module driver 'acme' failed to start: ValueError: no SDK device at /dev/ttyUSB7$",
    ):
        open_module("acme", SETTINGS)
    with pytest.raises(
        DriverError, match=r"^module driver 'odd' returned object, not a drivers.module.CardModule$"
    ):
        open_module("odd", SETTINGS)


def test_listing_that_fails_is_said(monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with pytest.raises(DriverError, match=r"^cannot list the installed module drivers: "):
        open_module("acme", SETTINGS)


@pytest.mark.parametrize("value", ["", "  ", "ser\x1bial", 7])
def test_what_is_no_driver_name(value) -> None:
    with pytest.raises(ValueError, match="expected the name of a module driver, such as 'serial'"):
        module_driver(value)


def test_the_configuration_names_key_and_driver(distribution) -> None:
    distribution("acme-driver", {"acme": "vendor_driver:good"})
    assert build({}, "defaults", env={}).module.driver == "serial"
    assert build({"module": {"driver": "acme"}}, "agent.toml", env={}).module.driver == "acme"
    with pytest.raises(
        ConfigError,
        match=r"^agent.toml: module.driver = 'x': no module driver 'x': installed drivers are "
        "serial, acme$",
    ):
        build({"module": {"driver": "x"}}, "agent.toml", env={})
    environment = {"POS_AGENT_MODULE_DRIVER": "acme"}
    assert build({}, "agent.toml", env=environment).module.driver == "acme"


def test_a_vendor_module_printing_at_import_spoils_no_answer(distribution) -> None:
    """The child that tries the import answers on its last line, whatever the module prints."""
    distribution("acme-driver", {"acme": "vendor_driver:good"})
    assert module_driver("acme") == "acme"
