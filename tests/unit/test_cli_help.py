"""``agent --help`` in English or Simplified Chinese (issue 25): the table of
``agent/cli/help_zh.py`` and the parser stay in step (every text the parser shows has its
Chinese, and the table has nothing the parser no longer shows), the Chinese help of every
command is laid out in Chinese, argparse's own words included, and neither an English start nor
the service (which builds the parser at every start) imports the table."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.cli import render
from agent.cli.help_zh import HELP
from agent.cli.parser import (
    HELP_HELP,
    USAGE_PREFIX,
    VERSION_HELP,
    ChineseHelpFormatter,
    build_parser,
    terminal_columns,
    wrap_columns,
)
from agent.display import columns, locale_language

HAN = re.compile(r"[\u4e00-\u9fff]")
# what a translation keeps as it is: options, dotted setting names, paths and topics, field
# numbers and other numbers, placeholders in capitals (HOST:PORT, SERIAL)
KEPT = re.compile(
    r"--[a-z][a-z-]*|\b[a-z_]+(?:\.[a-z_]+)+\b|[\w$.]*/[\w$/<>+.-]*[\w$>+]|\b\d+(?:[.,-]\d+)*\b"
    r"|\b[A-Z][A-Z0-9_]{2,}\b"
)
NOT_KEPT = {"e.g", "agent"}  # English words the regular expression takes for names
NOT_KEPT |= {"PIN", "TID/MID/hosts"}  # 密码输入, TID/MID 和主机地址


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it, each once (aliases aside)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from parsers(sub)


def texts(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every text the help of ``parser`` and its subcommands shows, with where: descriptions,
    section titles, the help of each option, positional and subcommand; and argparse's usage
    prefix."""
    found = {USAGE_PREFIX: "argparse"}
    for each in parsers(parser):
        if each.description:
            found.setdefault(each.description, f"{each.prog}: description")
        for group in each._action_groups:
            if group.title:
                found.setdefault(group.title, f"{each.prog}: section title")
        for action in each._actions:
            shown = [action]
            if isinstance(action, argparse._SubParsersAction):
                shown += action._get_subactions()
            for one in shown:
                if one.help and one.help is not argparse.SUPPRESS:
                    name = "/".join(one.option_strings) or one.metavar or one.dest
                    found.setdefault(one.help, f"{each.prog} {name}")
    return found


def test_every_text_of_the_help_has_its_chinese() -> None:
    """A new option, command or description without a translation fails here."""
    missing = {where: text for text, where in texts(build_parser("en")).items() if text not in HELP}
    assert missing == {}, "add these to agent/cli/help_zh.py"


def test_the_table_has_nothing_the_parser_no_longer_shows() -> None:
    shown = texts(build_parser("en"))
    assert sorted(set(HELP) - set(shown)) == [], "changed or removed from the parser"


def test_argparse_own_words_are_in_the_table() -> None:
    shown = texts(build_parser("en"))
    assert {USAGE_PREFIX, HELP_HELP, VERSION_HELP} <= set(shown)
    assert {"positional arguments", "options"} <= set(shown)  # Python 3.10 and later


@pytest.mark.parametrize("english", sorted(HELP))
def test_each_translation_is_chinese_and_keeps_the_names(english: str) -> None:
    chinese = HELP[english]
    assert HAN.search(chinese) and chinese != english
    assert "%" not in chinese  # argparse expands %(...)s in a help text
    assert chinese == chinese.strip() or english.endswith(" ")
    names = set(KEPT.findall(english)) - NOT_KEPT
    assert {name for name in names if name not in chinese} == set()


@pytest.fixture
def eighty_columns(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "80")
    terminal_columns.cache_clear()
    yield
    terminal_columns.cache_clear()


@pytest.mark.usefixtures("eighty_columns")
def test_the_chinese_help_of_every_command() -> None:
    """Each parser's help in Chinese: argparse's words translated, every text of its own in
    Chinese (no English one left), and no line wider than the formatter's width, counted in
    terminal columns."""
    english = set(HELP) - {USAGE_PREFIX}
    for parser in parsers(build_parser("zh")):
        help = parser.format_help()
        assert help.startswith("用法: " + parser.prog)
        assert "选项:\n" in help and "  -h, --help" in help and "显示本帮助信息并退出" in help
        assert "usage:" not in help and "options:" not in help
        assert not [text for text in english if text in help]
        width = parser._get_formatter()._width
        laid_out = help.split("\n\n", 1)[1]  # the usage of agent fleet is written as it is
        assert max(columns(line) for line in laid_out.splitlines()) <= width, help
    assert "显示程序版本号并退出" in build_parser("zh").format_help()


def test_the_english_help_is_argparse_own() -> None:
    help = build_parser("en").format_help()
    assert help.startswith("usage: agent [-h] [--version] COMMAND ...")
    assert "\noptions:\n" in help and HELP_HELP in help and VERSION_HELP in help
    assert "用法" not in help and "选项" not in help


def test_a_usage_error_is_laid_out_in_the_help_language(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser("zh").parse_args(["decode"])
    assert capsys.readouterr().err.startswith("用法: agent decode [-h]")


def test_usage_lines_line_up_under_the_chinese_prefix() -> None:
    """Wrapped lines start under the first option, the explicit usage of ``agent fleet`` (written
    for "usage: ") moved under its first line."""
    [check] = [p for p in parsers(build_parser("zh")) if p.prog == "agent module check"]
    formatter = ChineseHelpFormatter(check.prog, width=60)
    formatter.add_usage(check.usage, check._actions, check._mutually_exclusive_groups)
    first, second, *_ = formatter.format_help().splitlines()
    assert columns(first[: first.index("[-h]")]) == len(second) - len(second.lstrip())
    [fleet] = [p for p in parsers(build_parser("zh")) if p.prog == "agent fleet"]
    lines = fleet.format_usage().splitlines()
    assert lines[0].startswith("用法: agent fleet [-h]")
    assert lines[1].startswith("      agent fleet watch [-h]")  # under "agent" of line 1


def test_wrapping_by_columns() -> None:
    text = "通过驱动（module.driver，pos_agent.modules 入口点）对加密模块运行模块协议的测试用例。"
    for width in range(20, 90):
        lines = wrap_columns(text, width)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert all(columns(line) <= width for line in lines), (width, lines)
        assert not any(line.startswith(("，", "。", "）")) for line in lines)
        assert not any(line.endswith("（") for line in lines)
        assert any("pos_agent.modules" in line for line in lines)  # never cut
    assert wrap_columns("一二三（module.driver，四", 12) == ["一二三", "（module.driver，", "四"]
    assert wrap_columns("a  b\n c", 80) == ["a b c"]
    assert wrap_columns("", 80) == []


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "zh_TW.Big5"}, "zh"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LC_ALL": "", "LC_MESSAGES": "zh_CN.GBK", "LANG": "en_US.UTF-8"}, "zh"),
        ({"LC_MESSAGES": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    ],
)
def test_the_locale_says_which_language(environ, expected) -> None:
    assert locale_language(environ) == expected


@pytest.mark.parametrize(
    ("encoding", "lang", "expected"),
    [("utf-8", "zh_CN.UTF-8", "zh"), ("gbk", "zh_CN.GBK", "zh"), ("ascii", "zh_CN", "en"),
     ("utf-8", "C.UTF-8", "en")],
)  # fmt: skip
def test_the_help_language_needs_a_console_that_shows_chinese(
    monkeypatch, encoding, lang, expected
) -> None:
    for variable in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", lang)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding=encoding))
    assert render.help_language() == expected


TABLE_LOADED = """
import sys
from agent.cli.parser import build_parser
parser = build_parser()
print("built", "agent.cli.help_zh" in sys.modules)
parser.format_help()
print("shown", "agent.cli.help_zh" in sys.modules)
"""


@pytest.mark.parametrize(("lang", "shown"), [("C.UTF-8", False), ("zh_CN.UTF-8", True)])
def test_the_table_is_imported_only_for_a_chinese_help(lang: str, shown: bool) -> None:
    """Building the parser (what ``agent run`` does) never imports the table, in either locale;
    showing the help imports it only in Chinese."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES")}
    environ |= {"LANG": lang, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-c", TABLE_LOADED],
        env=environ, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split() == ["built", "False", "shown", str(shown)]
