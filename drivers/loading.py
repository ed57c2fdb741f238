"""Card module drivers by entry point (DESIGN.md section 12): ``module.driver`` names an entry
point of group ``pos_agent.modules`` whose value is a :data:`~drivers.module.DriverFactory`.

``serial``, the driver of the serial protocol of section 5, is built in: it is registered like any
other (pyproject.toml) and listed with them, but found without reading any metadata, so the
service with the default driver never pays for the search and a source tree or an install whose
metadata is stale still has it. Another distribution cannot take its name.

Every problem is a :class:`DriverError` of one line naming the driver: an unknown name (with the
installed ones), a name two distributions declare, a value that cannot be imported or is not
callable, a factory that fails or returns something else than a
:class:`~drivers.module.CardModule`.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from drivers.module import CardModule, DriverFactory, ModuleSettings

GROUP = "pos_agent.modules"
BUILTIN = "serial"
BUILTIN_VALUE = "drivers.serial_module:open_serial"
# importlib.metadata reads every installed distribution and brings email, zipfile and csv along:
# about 2 MB that would stay in the service for good (firmware_hooks.python_hooks does the same
# for hooks). A child process of the same interpreter, with this sys.path, lists the group and
# may try to load one value; a vendor module printing at import does not spoil the answer.
_SEARCH = """
import contextlib, json, sys
from importlib import metadata
sys.path[:] = json.loads(sys.argv[1])
group, wanted = sys.argv[2], sys.argv[3]
declared = sorted({(e.name, e.value) for e in metadata.entry_points(group=group)})
values = [value for name, value in declared if name == wanted]
problem = None
if len(values) == 1:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            target = metadata.EntryPoint(wanted, values[0], group).load()
        if not callable(target):
            problem = f"{values[0]} is {type(target).__name__}, not a callable factory"
    except Exception as exc:
        problem = f"{values[0]} cannot be loaded: {type(exc).__name__}: {exc}"
print(json.dumps({"declared": declared, "problem": problem}))
"""
_SEARCH_TIMEOUT = 30.0  # seconds; a vendor module that hangs at import is a driver problem


class DriverError(Exception):
    """A module driver that cannot be found, loaded or started: one line naming it."""


def _search(load: str = "") -> tuple[dict[str, list[str]], str | None]:
    """The drivers other distributions declare (name: values) and, when ``load`` is one of
    them, what keeps it from loading (None: nothing)."""
    import subprocess

    try:
        found = subprocess.run(
            [sys.executable, "-I", "-c", _SEARCH, json.dumps(sys.path), GROUP, load],
            capture_output=True, text=True, timeout=_SEARCH_TIMEOUT, check=True,
        )  # fmt: skip
        answer = json.loads(found.stdout.splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DriverError(f"cannot list the installed module drivers: {last}") from None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise DriverError(f"cannot list the installed module drivers: {exc}") from None
    declared: dict[str, list[str]] = {}
    for name, value in answer["declared"]:
        if name != BUILTIN:
            declared.setdefault(name, []).append(value)
    return declared, answer["problem"]


def _names(declared: dict[str, list[str]]) -> str:
    return ", ".join([BUILTIN, *sorted(declared)])


def _value(name: str, declared: dict[str, list[str]]) -> str:
    values = declared.get(name)
    if not values:
        raise DriverError(f"no module driver {name!r}: installed drivers are {_names(declared)}")
    if len(values) > 1:
        raise DriverError(
            f"module driver {name!r} is declared {len(values)} times, as {', '.join(values)}: "
            "uninstall all but one of the distributions declaring it"
        )
    return values[0]


def module_driver(value: Any) -> str:
    """``module.driver`` as the configuration takes it: the built-in name, or an installed
    driver that loads (tried in a child process). ``ValueError`` saying why not."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ValueError(f"expected the name of a module driver, such as {BUILTIN!r}")
    name = value.strip()
    if name == BUILTIN:
        return name
    try:
        declared, problem = _search(load=name)
        value_of_name = _value(name, declared)
    except DriverError as exc:
        raise ValueError(str(exc)) from None
    if problem is not None:
        raise ValueError(f"module driver {name!r} ({value_of_name}): {problem}")
    return name


def _resolve(value: str) -> Any:
    """The object an entry point's ``module:attr`` value names, as importlib.metadata's
    EntryPoint.load finds it (without importing importlib.metadata)."""
    module, _, attribute = value.split("[")[0].partition(":")
    target: Any = importlib.import_module(module.strip())
    for part in filter(None, attribute.strip().split(".")):
        target = getattr(target, part)
    return target


def load_driver(name: str) -> DriverFactory:
    """The factory of driver ``name``."""
    value = BUILTIN_VALUE if name == BUILTIN else _value(name, _search()[0])
    try:
        factory = _resolve(value)
    except Exception as exc:  # whatever a vendor's module raises at import
        raise DriverError(
            f"module driver {name!r} ({value}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(factory):
        raise DriverError(
            f"module driver {name!r} ({value}) is {type(factory).__name__}, not a callable factory"
        )
    return factory


def open_module(name: str, settings: ModuleSettings) -> CardModule:
    """The card module behind ``settings`` through driver ``name``; the device itself is reached
    at the first command."""
    factory = load_driver(name)
    try:
        module = factory(settings)
    except Exception as exc:  # a vendor's factory: its failure is reported as the driver's
        raise DriverError(
            f"module driver {name!r} failed to start: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(module, CardModule):
        raise DriverError(
            f"module driver {name!r} returned {type(module).__name__}, "
            "not a drivers.module.CardModule"
        )
    return module
