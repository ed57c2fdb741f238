"""The documentation in docs/ says what the code does: the configuration reference is what
docs/generate_config_reference.py writes from agent/config.py, and every configuration key,
finding code, cause code, event code, wire field, key layout, module command and message class
the code has (as far as a static look at it finds them) is in its page. Links between the pages
lead somewhere."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from agent import config, messages
from agent.registration import refusals
from agent.telemetry import events
from agent.transaction.classes import CLASSES
from agent.wire.spec import CUP_FIELDS
from agent.wire.working_keys import LAYOUTS
from drivers.module import Command, Status

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SELFCHECK = ROOT / "agent" / "selfcheck"
CODE = re.compile(r"^[a-z][a-z0-9]*\.[a-z0-9][a-z0-9-]*$")


def _generator() -> ModuleType:
    path = DOCS / "generate_config_reference.py"
    spec = importlib.util.spec_from_file_location("generate_config_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------- configuration


def test_the_configuration_reference_is_what_the_schema_writes() -> None:
    assert _page("configuration.md") == GENERATOR.render(), (
        "docs/configuration.md is out of date: run python3 docs/generate_config_reference.py"
    )


def test_every_configuration_key_is_in_the_reference() -> None:
    page = _page("configuration.md")
    missing = [
        f"{section}.{key}"
        for section, keys in config.PARSERS.items()
        for key in keys
        if f"| `{section}.{key}` |" not in page
    ]
    assert not missing


def test_every_key_is_described_and_notes_fill_only_what_the_code_does_not_say() -> None:
    source = GENERATOR.read_source()
    keys = {f"{s}.{k}" for s, parsers in config.PARSERS.items() for k in parsers}
    unknown = set(GENERATOR.NOTES) - keys
    assert not unknown, f"NOTES of keys the schema does not have: {sorted(unknown)}"
    commented = []
    for key in GENERATOR.NOTES:
        section, name = key.split(".")
        if source.fields.get((config.SECTION_CLASSES[section].__name__, name)):
            commented.append(key)
    assert not commented, f"agent/config.py comments these now; drop them from NOTES: {commented}"
    undescribed = [
        key
        for key in sorted(keys)
        if not GENERATOR.describe(source, *key.split("."))
        .removesuffix("A change takes effect at restart.")
        .strip()
    ]
    assert not undescribed, f"comment these fields in agent/config.py: {undescribed}"


def test_a_parser_the_generator_does_not_know_stops_it() -> None:
    def _odd(value: object) -> object:
        return value

    with pytest.raises(ValueError, match="PARSER_WORDS"):
        GENERATOR.accepts(_odd)


def test_defaults_are_written_as_they_read_back() -> None:
    """The generator writes each default as TOML and checks that the parser reads it back as
    the schema's default; rendering at all is that check passing for every key."""
    for section, parsers in config.PARSERS.items():
        defaults = config.SECTION_CLASSES[section]()
        for key, parser in parsers.items():
            written = GENERATOR.default_text(parser, getattr(defaults, key))
            if written is not None:
                assert written in _page("configuration.md")


# ------------------------------------------------------------------------- finding codes


def _findings_in(node: ast.AST) -> set[str]:
    """The finding names a function can give: ``finding="..."`` (both branches of a
    conditional), and the registration check's ``("name", Text(...), Text(...))`` tuples."""
    found: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.keyword) and item.arg == "finding":
            values = [item.value]
            if isinstance(item.value, ast.IfExp):
                values = [item.value.body, item.value.orelse]
            found |= {v.value for v in values if isinstance(v, ast.Constant)}
        if (
            isinstance(item, ast.Tuple)
            and item.elts
            and isinstance(item.elts[0], ast.Constant)
            and isinstance(item.elts[0].value, str)
            and any(
                isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "Text"
                for e in item.elts[1:]
            )
        ):
            found.add(item.elts[0].value)
    return found


def _calls_in(node: ast.AST) -> set[str]:
    return {
        item.func.id
        for item in ast.walk(node)
        if isinstance(item, ast.Call) and isinstance(item.func, ast.Name)
    }


def _check_id(tree: ast.Module) -> str | None:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "ID" for t in node.targets)
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return None


def selfcheck_codes() -> tuple[set[str], set[str]]:
    """(codes such as ``keys.kcv-mismatch``, generic findings any check may give). A function
    with a ``check_id`` parameter gives its findings to every check module that calls it."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in SELFCHECK.glob("*.py")}
    functions: dict[Path, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {
        path: [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for path, tree in trees.items()
    }
    helper_nodes = {
        node.name: node
        for nodes in functions.values()
        for node in nodes
        if any(arg.arg == "check_id" for arg in node.args.args)
    }
    helpers = set(helper_nodes)

    def helper_findings(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        node = helper_nodes[name]
        found = _findings_in(node)
        for called in _calls_in(node) & helpers - seen - {name}:
            found |= helper_findings(called, seen | {name})
        return found

    codes: set[str] = set()
    generic: set[str] = set()
    for path, tree in trees.items():
        check = _check_id(tree)
        for node in functions[path]:
            if node.name in helpers:
                continue
            found = _findings_in(node)
            for called in _calls_in(node) & helpers:
                found |= helper_findings(called)
            if check is None:
                generic |= found
            else:
                codes |= {f"{check}.{finding}" for finding in found}
    return codes, generic


def test_the_static_scan_finds_the_findings_it_should() -> None:
    """The scan below must keep seeing what it is meant to: a finding of each kind."""
    codes, generic = selfcheck_codes()
    expected = {
        "keys.kcv-mismatch",
        "keys.tampered",
        "module.module-unreachable",
        "registration.tusn-absent",
        "storage.state-damaged",
        "session.no-journal",
    }
    assert expected <= codes
    assert {"timeout", "check-error"} <= generic


def _documented(page: str) -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", page))


def test_every_finding_code_is_in_the_technicians_guide() -> None:
    page = _documented(_page("technician.md"))
    codes, generic = selfcheck_codes()
    wanted = codes | set(messages.explained()) | set(refusals.FINDINGS.values()) | {refusals.OTHER}
    wanted |= {f"<check>.{finding}" for finding in generic} | {"<check>.ok", "<check>.skip"}
    assert not sorted(wanted - page)


def test_every_cause_code_is_in_the_technicians_guide() -> None:
    causes = set()
    for name in (
        "recovery/engine.py",
        "recovery/incident.py",
        "service/status.py",
        "telemetry/publisher.py",
        "telemetry/reporter.py",
    ):
        tree = ast.parse((ROOT / "agent" / name).read_text(encoding="utf-8"))
        causes |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and CODE.match(node.value)
        }
    assert {"keys.tmk-mismatch", "host.incident", "host.not-signed-in"} <= causes
    # the ones made of a code: host.<code> while recovering, host.<code>-after-signin, and a
    # blocking finding <check>.<finding>
    causes |= {"host.<code>", "host.<code>-after-signin", "<check>.<finding>", "host.refused"}
    assert not sorted(causes - _documented(_page("technician.md")))


def _technician_sections() -> Iterator[tuple[str, str]]:
    page = _page("technician.md")
    parts = re.split(r"^#### `([^`]+)`.*$", page, flags=re.MULTILINE)
    for code, body in zip(parts[1::2], parts[2::2], strict=True):
        yield code, body.split("\n## ")[0].split("\n### ")[0]


def test_every_code_of_the_guide_says_what_it_means_and_what_to_do_in_both_languages() -> None:
    sections = dict(_technician_sections())
    assert len(sections) > 40
    incomplete = [
        code
        for code, body in sections.items()
        if not all(mark in body for mark in ("- Meaning:", "- 含义：", "- What to do:", "- 处理："))
    ]
    assert not incomplete


def test_every_event_kind_and_code_is_in_the_fleet_guide() -> None:
    tree = ast.parse(Path(events.__file__).read_text(encoding="utf-8"))
    codes = set()
    for node in ast.walk(tree):
        returned = node.value if isinstance(node, ast.Return) else None
        if isinstance(returned, ast.Tuple) and len(returned.elts) == 3:
            codes |= {
                item.value
                for item in ast.walk(returned.elts[1])
                if isinstance(item, ast.Constant)
                and isinstance(item.value, str)
                and CODE.match(item.value)
            }
    assert {"host.97", "reversal.stuck", "storage.journal-damaged"} <= codes
    page = _documented(_page("fleet.md"))
    missing = (codes | set(events.KINDS) | {"<check>.<finding>", "command.<cmd>"}) - page
    assert not sorted(missing)


# ------------------------------------------------------------------------- reference tables


def test_the_wire_profile_lists_every_field_of_the_built_in_profile() -> None:
    page = _page("wire-profile.md")
    missing = [f.number for f in CUP_FIELDS if f"| {f.number} | {f.kind} |" not in page]
    assert not missing


def test_the_wire_profile_lists_every_key_layout() -> None:
    page = _page("wire-profile.md")
    missing = [
        layout.number
        for layout in LAYOUTS.values()
        if f"| {layout.number} | {layout.scheme} | {layout.length} |" not in page
    ]
    assert not missing


def test_the_wire_profile_lists_every_message_class() -> None:
    page = _page("wire-profile.md")
    assert not [c.name for c in CLASSES if f"| {c.name}" not in page]


def test_the_module_protocol_lists_every_command_and_status() -> None:
    page = _page("module-protocol.md")
    commands = [c.name for c in Command if f"| `0x{c.value:02X}` | {c.name} |" not in page]
    statuses = [s.name for s in Status if f"| `{s.value:02X}` |" not in page]
    assert not commands and not statuses


# ------------------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """The anchor a Markdown reader (GitHub's rule) makes of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def test_links_in_the_docs_lead_somewhere() -> None:
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # another site
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken


def test_the_docs_stand_alone() -> None:
    """DESIGN.md is not shipped: no page sends a reader there."""
    pages = [p.name for p in DOCS.glob("*.md") if "DESIGN" in p.read_text(encoding="utf-8")]
    assert not pages
