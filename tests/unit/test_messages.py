"""The message catalogue (agent/messages.py, DESIGN.md section 13): every finding and cause code
the code can give is explained in English and Chinese; every template takes the same values in
both languages; every place that words something from the catalogue gives exactly the values its
templates take. Codes and call sites are found statically, from the source, so a path no other
test walks (a full disk, a tampered module) is checked too."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from agent import messages
from agent.cli.common import UsageError
from agent.cli.explain import cmd_explain
from agent.messages import CatalogueError, Text
from agent.registration import refusals
from agent.selfcheck import CheckResult, Status
from agent.selfcheck import checks as every_check
from agent.wire import codes

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent"
CODE = re.compile(r"^[a-z][a-z0-9]*\.[a-z0-9][a-z0-9-]*$")
HAN = re.compile(r"[\u4e00-\u9fff]")
CHINESE = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # with full-width punctuation
# where recovery and the fleet name why a terminal is not registered (DESIGN.md section 14)
CAUSE_FILES = [*sorted((AGENT / "recovery").glob("*.py")), AGENT / "service" / "status.py",
               AGENT / "telemetry" / "publisher.py"]  # fmt: skip
# the cause codes made of a response code, as engine.py makes them
CODE_CAUSES = {"host.97", "host.refused", "host.97-after-signin"}
OWN_KEYWORDS = {"finding", "variant", "remedy", "data"}  # CheckResult.of's, not a template's
WORDING_FUNCTIONS = {"message": ("summary",), "remedy": ("remedy",), "said": ("summary", "remedy")}


@dataclass(frozen=True)
class Wording:
    """One place the code words something from the catalogue."""

    where: str
    key: str
    parts: tuple[str, ...]  # "summary", "remedy"
    values: frozenset[str]


class Sample(str):
    """A value for any placeholder, whatever its format spec."""

    def __format__(self, spec: str) -> str:
        return "<" + str.__str__(self) + ">"


def _trees(folder: Path) -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in folder.rglob("*.py")}


def _strings(node: ast.expr) -> list[str] | None:
    """The strings an argument may be: a constant, or either branch of a conditional; None when
    only running the code can tell."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body), _strings(node.orelse)
        return body + orelse if body is not None and orelse is not None else None
    return None


def _check_id(tree: ast.Module) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ID" for t in node.targets
        ):
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    return None


def _calls_with_their_function(tree: ast.Module) -> Iterator[tuple[ast.Call, str]]:
    """Every call, with the name of the function it is in (innermost)."""

    def visit(node: ast.AST, function: str) -> Iterator[tuple[ast.Call, str]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            yield node, function
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function)

    yield from visit(tree, "")


def _is_check_result_of(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "of"
        and isinstance(func.value, ast.Name)
        and func.value.id == "CheckResult"
    )


def _checks_given_by_helper(trees: dict[Path, ast.Module]) -> dict[str, set[str]]:
    """For each self-check function taking ``check_id``: the checks it is called for, directly
    (``failure(ID, ...)``) or through another such function; every check when it is called for
    none in particular (the runner's deadline)."""
    helpers = {
        node.name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(arg.arg == "check_id" for arg in node.args.args)
    }
    direct: dict[str, set[str]] = {name: set() for name in helpers}
    through: dict[str, set[str]] = {name: set() for name in helpers}
    for tree in trees.values():
        check = _check_id(tree)
        for call, function in _calls_with_their_function(tree):
            callee = call.func.id if isinstance(call.func, ast.Name) else None
            if callee not in helpers or not call.args or not isinstance(call.args[0], ast.Name):
                continue
            if call.args[0].id == "ID" and check:
                direct[callee].add(check)
            elif call.args[0].id == "check_id" and function in helpers:
                through[callee].add(function)

    def checks(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = set(direct[name])
        for caller in through[name] - seen:
            found |= checks(caller, seen | {name})
        return found

    return {name: checks(name) or set(every_check()) for name in helpers}


@cache
def selfcheck_wordings() -> list[Wording]:
    """Every ``CheckResult.of`` of the self-check, for each check and finding it can give."""
    trees = _trees(AGENT / "selfcheck")
    helpers = _checks_given_by_helper(trees)
    found = []
    for path, tree in trees.items():
        own = _check_id(tree)
        for call, function in _calls_with_their_function(tree):
            if not _is_check_result_of(call):
                continue
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            first = call.args[0]
            statuses = {  # Status.FAIL, or either of a conditional's
                node.attr
                for node in ast.walk(call.args[1])
                if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "Status"
            }
            assert isinstance(first, ast.Name) and statuses, where
            checks = {own} if first.id == "ID" and own else helpers[function]
            keywords = {k.arg: k.value for k in call.keywords}
            findings = _strings(keywords["finding"]) if "finding" in keywords else ["ok"]
            variants = _strings(keywords["variant"]) if "variant" in keywords else [""]
            assert findings is not None and variants is not None, f"{where}: name them literally"
            values = frozenset(k for k in keywords if k is not None) - OWN_KEYWORDS
            parts = ("summary",) if "remedy" in keywords else ("summary", "remedy")
            for check, finding, status, variant in itertools.product(
                sorted(checks), findings, sorted(statuses), variants
            ):
                result = CheckResult(check, Status[status], Text("", ""), finding=finding)
                key = f"{result.code}:{variant}" if variant else result.code
                found.append(Wording(where, key, parts, values))
    return found


@cache
def literal_wordings() -> list[Wording]:
    """Every ``messages.message``, ``messages.remedy`` and ``messages.said`` of the agent whose
    key is written out (a key made at run time is a code the tests below render)."""
    found = []
    for path, tree in _trees(AGENT).items():
        for call, _ in _calls_with_their_function(tree):
            func = call.func
            if not (
                isinstance(func, ast.Attribute)
                and func.attr in WORDING_FUNCTIONS
                and isinstance(func.value, ast.Name)
                and func.value.id == "messages"
            ):
                continue
            values = frozenset(k.arg for k in call.keywords if k.arg is not None)
            for key in _strings(call.args[0]) or []:
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                found.append(Wording(where, key, WORDING_FUNCTIONS[func.attr], values))
    return found


def cause_codes() -> set[str]:
    found = set(CODE_CAUSES)
    for path in CAUSE_FILES:
        found |= {
            node.value
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and CODE.match(node.value)
        }
    return found


# what words the agent's own answers (DESIGN.md section 4): the finding is the first code passed
LOCAL_ANSWERS = {"local_answer", "local", "_local", "_locally", "LocalAnswer"}


def local_answer_calls() -> Iterator[tuple[str, ast.Call]]:
    for path in sorted(AGENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in LOCAL_ANSWERS:
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def local_answer_codes() -> set[str]:
    """The findings the agent's own answers give (field 63): the codes written in the modules
    that make them (wrap and pass-through mode; recovery's are among its causes)."""
    return {
        node.value
        for path in sorted((AGENT / "transaction").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.match(node.value)
    }


def finding_codes() -> set[str]:
    """Every code the agent can give: the self-check's, a refused request's, recovery's and the
    fleet's causes, the agent's own answers'."""
    checks = {w.key.partition(":")[0] for w in selfcheck_wordings()}
    found = checks | set(refusals.FINDINGS.values()) | {refusals.OTHER} | cause_codes()
    return found | local_answer_codes()


def _render(wording: Wording) -> tuple[Text, Text | None]:
    values = {name: Sample(name) for name in wording.values}
    if wording.parts == ("summary",):
        return messages.message(wording.key, **values), None
    if wording.parts == ("remedy",):
        return Text("", ""), messages.remedy(wording.key, **values)
    return messages.said(wording.key, **values)


def _texts() -> Iterator[tuple[str, str, Text]]:
    for key, entry in messages.CATALOGUE.items():
        for part in dataclasses.fields(entry):
            text = getattr(entry, part.name)
            if text is not None:
                yield key, part.name, text


# ------------------------------------------------------------------------------ the scan


def test_the_scan_finds_what_it_should() -> None:
    """The static look must keep seeing a finding of each kind, or the tests below see nothing."""
    assert {
        "keys.kcv-mismatch",
        "keys.tampered",  # through module.failure
        "module.module-unreachable",
        "registration.tusn-absent",
        "storage.state-damaged",  # a conditional finding
        "session.no-journal",
        "clock.skip",
        "keys.ok",
        "session.timeout",  # the runner's, for every check
        "network.check-error",
    } <= finding_codes()
    assert {"keys.tmk-mismatch", "host.incident", "host.not-signed-in"} <= cause_codes()
    assert {"request.format", "request.original-unknown", "host.no-answer"} <= local_answer_codes()
    keys = {w.key for w in selfcheck_wordings() + literal_wordings()}
    assert {"keys.mac-selftest:macs-differ", "clock:ahead", "clock:behind"} <= keys
    assert {"registration.a2-missing:refused-request", "recovery:unregistered"} <= keys


def test_every_local_answer_names_its_finding() -> None:
    """Each call that makes an answer of the agent's own passes a finding code as it is written,
    or a ``finding`` chosen among such codes above it (so the scan sees them, and ``agent
    explain`` knows them); the one exception passes recovery's hold, whose finding is the cause
    code."""
    calls = list(local_answer_calls())
    assert len(calls) > 20
    for where, call in calls:
        if any(isinstance(arg, ast.Starred) for arg in call.args):
            assert ast.unparse(call) == "self.sender.local(request, *held)", where
            continue
        codes_passed = [
            a.value for a in call.args if isinstance(a, ast.Constant) and CODE.match(str(a.value))
        ]
        # a wrapper passing on the finding it was given (``Sender.local``, ``LocalAnswer``'s)
        forwarded = any(
            (isinstance(a, ast.Name) and a.id == "finding")
            or (isinstance(a, ast.Attribute) and a.attr == "finding")
            for a in call.args
        )
        assert len(codes_passed) == 1 or forwarded, (where, ast.unparse(call))


# -------------------------------------------------------------------------- every code


@pytest.mark.parametrize("code", sorted(finding_codes()))
def test_every_finding_code_is_explained_in_both_languages(code: str) -> None:
    meaning, action = messages.explain(code)
    for text in (meaning, action):
        assert text.en.strip() and HAN.search(text.zh), (code, text)
        assert not messages.placeholders(text.en) | messages.placeholders(text.zh), (code, text)


def test_every_code_the_catalogue_explains_is_one_the_agent_gives() -> None:
    """No entry for a code nothing gives any more (a pattern stands for the codes it matches)."""
    given = finding_codes()
    patterns = {key for key in messages.explained() if "<" in key}
    stale = set(messages.explained()) - patterns - given
    assert not sorted(stale)
    assert all(any(messages.explain(c) == messages.explain(p) for c in given) for p in patterns)


def test_every_wording_gives_the_values_its_templates_take() -> None:
    """Each self-check result, merchant's message and term the code words renders with the
    values its call site gives: none missing, none left over."""
    wordings = selfcheck_wordings() + literal_wordings()
    assert len(wordings) > 60
    for wording in wordings:
        try:
            summary, remedy = _render(wording)
        except CatalogueError as exc:
            pytest.fail(f"{wording.where}: {exc}")
        for text in filter(None, (summary, remedy)):
            assert "{" not in text.en + text.zh, (wording, text)


def test_every_check_says_something_of_each_finding_in_both_languages() -> None:
    for wording in selfcheck_wordings():
        summary, _ = _render(wording)
        assert summary.en and HAN.search(summary.zh), (wording.where, wording.key, summary)


# ----------------------------------------------------------------------- every template


@pytest.mark.parametrize(("key", "part", "text"), list(_texts()), ids=lambda v: str(v)[:40])
def test_every_template_takes_the_same_values_in_both_languages(
    key: str, part: str, text: Text
) -> None:
    en, zh = messages.placeholders(text.en), messages.placeholders(text.zh)
    assert all(name.isidentifier() for name in en | zh), (key, text)
    assert zh <= en, f"{key} {part}: the Chinese takes {zh - en} the English does not"
    assert en - zh <= {messages.ENGLISH_ONLY}, f"{key} {part}: the Chinese leaves out {en - zh}"
    assert text.en.strip() and CHINESE.search(text.zh), (key, part, text)


def test_every_key_is_a_code_a_pattern_or_a_name() -> None:
    for key, entry in messages.CATALOGUE.items():
        assert entry != messages.Entry(), key
        code, _, situation = key.partition(":")
        if "<" in key:  # a pattern says or explains for the codes it matches
            assert not situation and CODE.match(re.sub(r"<[a-z]+>", "x", code)), key
        elif CODE.match(code):  # a code, or another way to say one
            assert not situation or messages.CATALOGUE.get(code) is not None, key
        else:  # a name of its area: words that are no finding's own
            assert situation and code.isalpha(), key


def test_the_checks_are_named_in_both_languages() -> None:
    assert set(messages.CHECK_NAMES) == set(every_check())
    assert all(HAN.search(name.zh) for name in messages.CHECK_NAMES.values())


# ------------------------------------------------------------------------------ the API


def test_a_message_is_filled_with_its_values() -> None:
    assert messages.message("keys.tmk-absent", slot=1) == Text(
        "no master key (TMK) in slot 1", "密钥槽 1 中没有主密钥（TMK）"
    )
    assert messages.remedy("keys.kcv-mismatch") == Text(
        "sign in again: `agent signin`", "重新签到：`agent signin`"
    )
    assert messages.remedy("clock.ok") is None


def test_a_value_in_both_languages_is_said_in_each() -> None:
    ahead = messages.message(
        "clock.clock-off",
        seconds="90",
        direction=messages.message("clock:ahead"),
        source=messages.message("clock:time-sync", service="chrony"),
    )
    assert ahead == Text(
        "clock is 90 s ahead of the time sync (chrony)", "终端时钟比时间同步服务（chrony）快 90 秒"
    )
    listed = messages.message("keys.keys-absent", absent=messages.listing(["PIK", "MAK"]))
    assert listed == Text("no working keys: PIK, MAK absent", "工作密钥缺失：PIK、MAK")
    rc = codes.lookup("97")  # a response code is worded in both languages too
    after = messages.message("host.97-after-signin", code="97", meaning=rc)
    assert rc.en in after.en and rc.zh in after.zh


def test_a_situation_says_only_what_differs_and_a_pattern_stands_for_its_codes() -> None:
    summary, remedy = messages.said("keys.tmk-absent:download", slot=1, source="tms")
    assert summary == messages.message("keys.tmk-absent", slot=1)
    assert remedy is not None and "keys.tmk_download = tms" in remedy.en
    assert messages.explain("keys.tmk-absent:download") == messages.explain("keys.tmk-absent")
    assert messages.message("storage.timeout", deadline=8).en == "did not finish within 8 s"
    assert messages.explain("keys.ok") == messages.explain("<check>.ok")
    assert messages.explain("host.A0") == messages.explain("host.<code>")


@pytest.mark.parametrize(
    ("call", "why"),
    [
        (lambda: messages.message("keys.no-such-finding"), "has no 'keys.no-such-finding'"),
        (lambda: messages.message("nocheck.timeout", deadline=8), "has no 'nocheck.timeout'"),
        (lambda: messages.message("keys.tmk-absent"), "keys.tmk-absent: no value for slot"),
        (lambda: messages.message("keys.never-signed-in", slot=1), "no template takes slot"),
        (lambda: messages.said("storage.disk-low", free="3"), "no value for directory"),
        (lambda: messages.message("host.not-signed-in"), "says nothing of"),
        (lambda: messages.explain("clock:ahead"), "does not explain 'clock:ahead'"),
    ],
)
def test_a_wrong_key_or_value_fails_loudly(call: object, why: str) -> None:
    assert callable(call)
    with pytest.raises(CatalogueError, match=re.escape(why)):
        call()


# -------------------------------------------------------------------------- agent explain


def _explain(code: str, as_json: bool) -> int:
    return cmd_explain(argparse.Namespace(code=code, requirement=None, json=as_json))


def test_explain_says_any_finding_code_in_both_languages(capsys: pytest.CaptureFixture) -> None:
    assert _explain("keys.tmk-absent", as_json=True) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["finding"] == "keys.tmk-absent"
    assert "master key" in said["meaning"]["en"] and "主密钥" in said["meaning"]["zh"]
    assert "keys.tmk_download" in said["action"]["en"] and said["action"]["zh"]
    assert _explain("host.97-after-signin", as_json=False) == 0
    assert "register (or reactivate) the terminal" in capsys.readouterr().out


def test_explain_names_the_codes_it_knows_of_an_unknown_ones_area() -> None:
    with pytest.raises(UsageError, match=r"unknown finding 'storage\.nothing'") as raised:
        _explain("storage.nothing", as_json=False)
    assert "storage.disk-full" in str(raised.value) and "keys." not in str(raised.value)
