"""Write docs/configuration.md from the one configuration schema, agent/config.py.

Everything in the reference comes from the code: the sections and keys from ``PARSERS``, what a
key accepts from its parser, its default from the ``*Config`` dataclass, its description from the
comments beside the field (and beside its parser, and the class docstring), and whether a change
needs a restart from ``agent.settings``. Only what a parser function means in words is said here
(``PARSER_WORDS``), and a key without any comment in agent/config.py gets the sentence in
``NOTES`` until one is written there; ``tests/unit/test_docs.py`` keeps both honest and fails
when docs/configuration.md is not what this script writes.

    python3 docs/generate_config_reference.py           # rewrite docs/configuration.md
    python3 docs/generate_config_reference.py --check   # exit 1 if it differs
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import re
import sys
import tokenize
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from agent import config as schema  # noqa: E402  (after the path above)
from agent import settings  # noqa: E402

SOURCE = ROOT / "agent" / "config.py"
OUTPUT = ROOT / "docs" / "configuration.md"

# What each parser of agent/config.py accepts, in words. The parsers made by a factory
# (_choice, _between, _digits) say it from their own arguments.
PARSER_WORDS: dict[str, str] = {
    "_text": "text",
    "_number": "a number, 0 or more",
    "_seconds": "seconds, above 0, at most 86400",
    "_reversal_pause": "seconds, above 0 (more than 600 is taken as 600)",
    "_positive": "a number above 0",
    "_flag": "`true` or `false`",
    "parse_endpoint": '`"HOST:PORT"` (`"[::1]:PORT"` for IPv6); `""`: none',
    "_nii": '4 hex digits, e.g. `"0003"`',
    "_byte_hex": '2 hex digits, e.g. `"31"`',
    "_key_layout": '`"auto"` or a layout number from 1 to {layouts}',
    "_profile_path": "the path of a wire profile (TOML); a relative path starts at the "
    "configuration file's directory",
    "_url": '`""` or an `http://` or `https://` URL',
    "_broker": '`""`, `"mqtt://HOST[:PORT]"` or `"mqtts://HOST[:PORT]"`',
    "_topic_prefix": "one MQTT topic level: no `+`, `#`, leading or trailing `/`",
    "_app_version": "at most 8 printable ASCII characters",
    "_cpu": '`"last"`, `"any"` or a CPU number',
    "_tid": '`""` or 8 printable ASCII characters',
    "_mid": '`""` or 15 printable ASCII characters',
    "module_driver": '`"serial"` (built in) or the name of an installed driver: an entry point '
    "of group `pos_agent.modules`",
}

# Keys that have no comment in agent/config.py yet: what they are. Move a sentence into a
# comment beside its field there and delete it here (the test says when one is left over).
NOTES: dict[str, str] = {
    "terminal.tid": "Terminal ID, field 41. Empty: the terminal is not provisioned.",
    "terminal.mid": "Merchant ID, field 42.",
    "terminal.support_phone": "Shown to the merchant when a person must act.",
    "host.primary": "The acquirer's switch.",
    "host.backup": "Tried when the primary cannot be reached, or after `host.failover_after` "
    "response timeouts in a row.",
    "host.connect_timeout": "Seconds a TCP (and TLS) connection may take.",
    "host.response_timeout": "Seconds the host has to answer; a financial request without an "
    "answer is reversed.",
    "host.tls": "TLS 1.2 or later to the host.",
    "host.ca_file": "With TLS: the only CA the host's certificate may chain to (pinned). Empty: "
    "the system's CAs.",
    "host.server_name": "With TLS: the name the host's certificate must carry. Empty: the host "
    "part of the endpoint.",
    "wire.tpdu_destination": "TPDU destination NII: the acquirer's, as it assigned it.",
    "wire.tpdu_source": "TPDU source NII: the terminal's.",
    "wire.software_version": "Header byte 2, the application's software version.",
    "wire.sub_version": "Header bytes 4-6, sent as BCD.",
    "module.url": "The card module's serial line: a device (`/dev/ttyS1`), or any URL of "
    "pyserial's `serial_for_url` (`socket://HOST:PORT` for a simulator, `loop://`).",
    "module.baudrate": "Serial speed; 8N1.",
    "module.key_slot": "The module's key slot the terminal's keys are in (the simulator: 0 a "
    "DES master key, 1 an SM4 one).",
    "tms.timeout": "Seconds the TMS has to answer.",
    "hooks.directory": "Executable hooks are in `<directory>/<event>/`. Empty: no hooks at all "
    "(neither executables nor Python entry points).",
    "hooks.timeout": "Seconds the hooks of one event may take; then they are killed.",
    "recovery.probe_max": "Longest pause of the sign-in probe while unregistered.",
    "clock.fail_after": "Seconds of offset over which the clock check fails.",
    "session.retry_max": "Longest pause between those tries (seconds).",
    "telemetry.key_file": "The private key of `cert_file`.",
    "telemetry.commands_per_minute": "Operator commands carried out a minute at most; more "
    "are refused.",
    "telemetry.topic_prefix": "The first level of every topic: `<prefix>/<serial>/state` and "
    "so on.",
}

# DESIGN.md is not shipped: where its sections are told in these docs.
DESIGN_SECTIONS: dict[str, str] = {
    "4": "wire-profile.md",
    "5": "module-protocol.md",
    "6": "technician.md",
    "7": "technician.md",
    "14": "fleet.md",
    "16": "wire-profile.md#session-downloads",
    "17": "wire-profile.md#field-59",
    "18": "wire-profile.md#key-families-and-the-remote-master-key-download",
}
_DESIGN_REFERENCE = re.compile(r"DESIGN\.md,? section (\d+)")
_NOT_TEXT = re.compile(r"^(fmt: (skip|off|on)|noqa\b.*|type: ignore\b.*)$")


# ------------------------------------------------------------------------- reading the source


@dataclasses.dataclass(frozen=True)
class _Comment:
    text: str
    alone: bool  # the only thing on its line


def _comments(source: str) -> dict[int, _Comment]:
    """The comments of ``source`` by line number."""
    found: dict[int, _Comment] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            alone = not token.line[: token.start[1]].strip()
            found[token.start[0]] = _Comment(text, alone)
    return found


def _words(comments: list[str]) -> str:
    kept = [c for c in comments if c and not _NOT_TEXT.match(c)]
    return " ".join(kept)


def _above(comments: dict[int, _Comment], line: int) -> list[str]:
    """The block of comment lines directly above ``line``."""
    block: list[str] = []
    line -= 1
    while line in comments and comments[line].alone:
        block.insert(0, comments[line].text)
        line -= 1
    return block


def _beside(comments: dict[int, _Comment], first: int, last: int) -> list[str]:
    """The comments at the end of lines ``first`` to ``last``."""
    return [
        comments[n].text for n in range(first, last + 1) if n in comments and not comments[n].alone
    ]


@dataclasses.dataclass
class _Source:
    classes: dict[str, str]  # class name: docstring ("" when none)
    fields: dict[tuple[str, str], str]  # (class name, field): its comments
    parsers: dict[tuple[str, str], str]  # (section, key): the comments beside its parser


def read_source(path: Path = SOURCE) -> _Source:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    comments = _comments(text)
    found = _Source({}, {}, {})
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            found.classes[node.name] = ast.get_docstring(node) or ""
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    end = item.end_lineno or item.lineno
                    said = _above(comments, item.lineno) + _beside(comments, item.lineno, end)
                    found.fields[node.name, item.target.id] = _words(said)
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "PARSERS":
            assert isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
            assert isinstance(node.value, ast.Dict)
            for section, keys in zip(node.value.keys, node.value.values, strict=True):
                assert isinstance(section, ast.Constant) and isinstance(keys, ast.Dict)
                for key, value in zip(keys.keys, keys.values, strict=True):
                    assert isinstance(key, ast.Constant)
                    end = value.end_lineno or value.lineno
                    said = _beside(comments, key.lineno, end)
                    found.parsers[section.value, key.value] = _words(said)
    return found


# ------------------------------------------------------------------------- what a key takes


def _closure(parser: Callable[..., Any]) -> dict[str, Any]:
    names = parser.__code__.co_freevars
    cells = parser.__closure__ or ()
    return {name: cell.cell_contents for name, cell in zip(names, cells, strict=True)}


def _quoted(options: tuple[str, ...]) -> str:
    return ", ".join(f'`"{option}"`' for option in options)


def accepts(parser: Callable[..., Any]) -> str:
    """What ``parser`` accepts, in words; ValueError for a parser this script does not know."""
    name = parser.__name__
    if name in PARSER_WORDS:
        return PARSER_WORDS[name].format(layouts=len(schema.LAYOUTS))
    made = parser.__qualname__.split(".<locals>.")[0]
    values = _closure(parser)
    if made == "_choice":
        return "one of " + _quoted(values["options"])
    if made == "_between":
        return f"a whole number from {values['lowest']} to {values['highest']}"
    if made == "_digits":
        return f"{values['count']} digits, as text"
    raise ValueError(
        f"agent/config.py parser {parser.__qualname__} is new: say what it accepts in "
        "PARSER_WORDS of docs/generate_config_reference.py"
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no TOML form for {value!r}")


def default_text(parser: Callable[..., Any], value: Any) -> str | None:
    """The default as one would write it in agent.toml; None when no value written there means
    it (the built-in wire profile)."""
    name = parser.__name__
    if name == "_profile_path":
        return None
    if name == "_nii":
        return _toml(f"{value:04X}")
    if name == "_byte_hex":
        return _toml(f"{value:02X}")
    if name == "_key_layout" and value == 0:
        return _toml("auto")
    if name == "parse_endpoint":
        return _toml("" if value is None else str(value))
    return _toml(value)


def _checked_default(section: str, key: str, parser: Callable[..., Any], value: Any) -> str:
    """The default, written so that reading it back gives the schema's own default."""
    written = default_text(parser, value)
    if written is None:
        return "the built-in CUP profile"
    read = parser(tomllib.loads(f"x = {written}")["x"])
    if read != value:
        raise ValueError(f"{section}.{key}: the default {written} reads as {read!r}, not {value!r}")
    return f"`{written}`"


# ------------------------------------------------------------------------- the Markdown


def _markdown(text: str) -> str:
    """A comment or docstring as Markdown: ``x`` as `x`, DESIGN.md sections as links into
    these docs (DESIGN.md is not shipped), one line, safe in a table cell."""

    def link(match: re.Match[str]) -> str:
        number = match.group(1)
        if number not in DESIGN_SECTIONS:
            raise ValueError(
                f"agent/config.py cites DESIGN.md section {number}: add where these docs "
                "tell it to DESIGN_SECTIONS"
            )
        page = DESIGN_SECTIONS[number]
        return f"[{page.split('#')[0].removesuffix('.md').replace('-', ' ')}]({page})"

    text = " ".join(text.split())
    text = text.replace("``", "`")
    text = _DESIGN_REFERENCE.sub(link, text)
    # outside code spans, <placeholder> is not an HTML tag to a Markdown reader
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "\\<").replace(">", "\\>")
    return "`".join(parts).replace("|", "\\|")


def _sentence(text: str) -> str:
    """``text`` as a sentence: a plain first word capitalised (not a name such as
    ``mqtts:`` or ``node_exporter``), a full stop at the end."""
    text = text.strip().rstrip(";,")
    if not text:
        return ""
    first = text.split(" ", 1)[0]
    if first.replace("-", "").isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _restart(section: str, key: str) -> bool:
    return section in settings.AT_RESTART or (
        section == "module" and key in settings.MODULE_AT_RESTART
    )


def describe(source: _Source, section: str, key: str) -> str:
    cls = schema.SECTION_CLASSES[section]
    field = source.fields.get((cls.__name__, key), "")
    said = [field or NOTES.get(f"{section}.{key}", ""), source.parsers.get((section, key), "")]
    text = " ".join(_sentence(_markdown(s)) for s in said if s)
    if _restart(section, key):
        text = f"{text} A change takes effect at restart.".strip()
    return text


HEADER = """\
# Configuration reference

<!-- Generated by docs/generate_config_reference.py from agent/config.py: do not edit by hand.
     tests/unit/test_docs.py fails when this file is not what the script writes. -->

The agent reads one TOML file, `/etc/pos-agent/agent.toml` (or the file `--config` names). The
packages install it with every key commented out (at its default, or an example); uncomment
what you set. The agent checks the whole file when it starts and on `systemctl reload
pos-agent`: a wrong value stops the start (exit status 2) or fails the reload (the running
configuration stays), with a message that names the file, the key and what was expected.
`agent config check` checks a file the same way, prints what is in effect, and warns about an
unknown `POS_AGENT_*` variable and a configuration that others may write.

- Every key can also be set by the environment variable `POS_AGENT_<SECTION>_<KEY>`
  (`POS_AGENT_HOST_PRIMARY=10.0.0.5:5000`); the variable wins over the file. Values from the
  environment are text: numbers and `true`/`false` are read from it. A variable that names no
  setting is ignored by the agent.
- An unknown section or key is an error, not a warning: a misspelt key never passes unnoticed.
- A missing `/etc/pos-agent/agent.toml` is not an error: the defaults are an unprovisioned
  terminal, which runs and waits for `agent provision`. A file named with `--config` must exist.
- Paths of files the configuration reads (`wire.profile`) start at the file's own directory
  when relative.
- What re-provisioning learnt (TID, MID, hosts, NIIs, key slot) is kept in
  `provisioning.json` in the state directory and laid over the file at every start: the TMS is
  the authority on a terminal's identity (see [operations](operations.md)).
- A reload changes everything except the keys marked "takes effect at restart" below: those the
  service opens once (its sockets, journal, serial line and MQTT connection).
- `agent fleet watch` on an operator's machine reads the same format, usually from
  `/etc/pos-agent/fleet.toml`: `[telemetry]` for the broker and `[fleet]` for its thresholds
  (see [fleet](fleet.md)).

A terminal needs little more than its identity, its acquirer and its card module:

```toml
[terminal]
tid = "10000001"
mid = "898100012340001"
support_phone = "95516"

[host]
primary = "10.0.0.5:5000"
backup = "10.0.0.6:5000"

[wire]
tpdu_destination = "0003"

[module]
url = "/dev/ttyS1"
```

"""


def render() -> str:
    source = read_source()
    lines = [HEADER.rstrip("\n"), ""]
    for section, parsers in schema.PARSERS.items():
        cls = schema.SECTION_CLASSES[section]
        defaults = {f.name: f for f in dataclasses.fields(cls)}
        lines.append(f"## [{section}]")
        lines.append("")
        doc = source.classes.get(cls.__name__, "")
        if doc:
            lines += [_sentence(_markdown(doc)), ""]
        lines.append("| key | value | default | what it does |")
        lines.append("|---|---|---|---|")
        for key, parser in parsers.items():
            if key not in defaults:
                raise ValueError(f"{section}.{key} has a parser but no field in {cls.__name__}")
            spec = defaults[key]
            if spec.default is not dataclasses.MISSING:
                value = spec.default
            else:
                assert spec.default_factory is not dataclasses.MISSING
                value = spec.default_factory()
            cells = (
                f"`{section}.{key}`",
                accepts(parser),
                _checked_default(section, key, parser, value),
                describe(source, section, key),
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
