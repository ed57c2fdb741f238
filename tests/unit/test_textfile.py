"""The Prometheus textfile of telemetry.textfile (DESIGN.md section 14): what it holds for a
state message and the agent's counters, label values that stay labels whatever text the message
carries, and a file written whole, mode 0644 whatever the umask, renamed over the target.

The text is read back with a strict reader of the exposition format written here from the
format's grammar (not with the writer's code); tests/integration/test_textfile.py has Debian's
node_exporter read the same files."""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.telemetry import textfile

METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
LABEL_PARTS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE = re.compile(rf"({METRIC})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)")
COMMENT = re.compile(rf"# (HELP|TYPE) ({METRIC}) (.*)")

Series = tuple[str, tuple[tuple[str, str], ...]]

MESSAGE = {
    "serial": "SIM00001234",
    "tusn": "000001020000000000001234",
    "tid": "10000001",
    "mid": "898100012340001",
    "acquirer": {"host": "10.1.2.3:5000", "nii": "0001"},
    "state": "registered",
    "cause": "",
    "cause_text": "",
    "since": "2026-12-01T08:00:00+08:00",
    "last_97": None,
    "reversals_queued": 2,
    "reversals_stuck": 1,
    "outbox_dropped": 7,
    "seq": 12,
    "version": "1.4.0",
    "at": "2026-12-01T08:05:00+08:00",
}
COUNTERS = {"97": 5, "recoveries": 3, "refused_requests": 4}
# what a hostile TMS, broker or host could put in a text field: a quote and a backslash that
# would end the label early, newlines that would start a line of their own, and ANSI sequences
# (a window title, a cleared screen) for whoever cats the file
HOSTILE = 'a"b\\c\nd\r\x1b]0;owned\x07\x1b[2J\u202eevil'


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def samples(text: str) -> dict[Series, float]:
    """Every sample of exposition-format ``text``, by metric name and sorted labels; fails on
    any line that is not a HELP, TYPE or sample line of the format, on a sample of a metric
    without its TYPE before it, and on a series given twice."""
    assert text.endswith("\n")
    typed: set[str] = set()
    found: dict[Series, float] = {}
    for line in text[:-1].split("\n"):  # the format's lines end in \n alone
        if line.startswith("#"):
            comment = COMMENT.fullmatch(line)
            assert comment, f"not a HELP or TYPE line: {line!r}"
            if comment.group(1) == "TYPE":
                assert comment.group(3) in ("gauge", "counter", "untyped", "summary", "histogram")
                typed.add(comment.group(2))
            continue
        sample = SAMPLE.fullmatch(line)
        assert sample, f"not a sample line: {line!r}"
        name, labels, value = sample.groups()
        assert name in typed or name.rpartition("_")[0] in typed, f"{name} has no TYPE"
        pairs = tuple(sorted((k, unescape(v)) for k, v in LABEL_PARTS.findall(labels or "")))
        assert (name, pairs) not in found, f"{name}{pairs} twice"
        found[(name, pairs)] = float(value)
    return found


def series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))


def test_the_file_holds_info_state_cause_and_counters() -> None:
    found = samples(textfile.render(MESSAGE, COUNTERS))
    info = series("pos_agent_info", serial="SIM00001234", tid="10000001", version="1.4.0")
    assert found[info] == 1
    merchant = series("pos_agent_acquirer_info", serial="SIM00001234", mid="898100012340001",
                      acquirer="10.1.2.3:5000")  # fmt: skip
    assert found[merchant] == 1
    for state in ("registered", "recovering", "unregistered", "offline"):
        expected = 1 if state == "registered" else 0
        assert found[series("pos_agent_state", serial="SIM00001234", state=state)] == expected
    assert found[series("pos_agent_cause_info", serial="SIM00001234", cause="")] == 1
    terminal = {"serial": "SIM00001234"}
    assert found[series("pos_agent_97_total", **terminal)] == 5
    assert found[series("pos_agent_recoveries_total", **terminal)] == 3
    assert found[series("pos_agent_refused_requests_total", **terminal)] == 4
    assert found[series("pos_agent_reversals_queued", **terminal)] == 2
    assert found[series("pos_agent_reversals_stuck", **terminal)] == 1
    assert found[series("pos_agent_telemetry_events_dropped_total", **terminal)] == 7
    # 2026-12-01T08:00:00+08:00; no 97 yet is 0
    assert found[series("pos_agent_state_since_timestamp_seconds", **terminal)] == 1796083200
    assert found[series("pos_agent_last_97_timestamp_seconds", **terminal)] == 0


def test_the_serial_keys_every_series_and_the_tid_is_only_on_info() -> None:
    """A re-provisioned TID changes one info series, not the terminal's identity."""
    for (name, labels), _ in samples(textfile.render(MESSAGE, COUNTERS)).items():
        keys = dict(labels)
        assert keys["serial"] == "SIM00001234", name
        assert ("tid" in keys) == (name == "pos_agent_info"), name


def test_the_info_series_has_the_labels_design_pins_in_its_order() -> None:
    """DESIGN.md section 14: ``pos_agent_info{version,serial,tid}``, as a reader that matches
    the line rather than parse it would find it."""
    text = textfile.render(MESSAGE, COUNTERS)
    expected = 'pos_agent_info{version="1.4.0",serial="SIM00001234",tid="10000001"} 1'
    assert expected in text.splitlines()


def test_every_metric_has_help_and_type_and_counters_end_in_total() -> None:
    text = textfile.render(MESSAGE, COUNTERS)
    names = {name for name, _ in samples(text)}
    for name in names:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
        kind = re.search(rf"# TYPE {name} (\w+)", text).group(1)
        assert (kind == "counter") == name.endswith("_total"), name


def test_an_unregistered_terminal_shows_its_state_cause_and_last_97() -> None:
    message = {**MESSAGE, "state": "unregistered", "cause": "host.97-after-signin",
               "last_97": "2026-12-01T08:04:00+08:00"}  # fmt: skip
    found = samples(textfile.render(message, COUNTERS))
    assert found[series("pos_agent_state", serial="SIM00001234", state="unregistered")] == 1
    assert found[series("pos_agent_state", serial="SIM00001234", state="registered")] == 0
    cause = series("pos_agent_cause_info", serial="SIM00001234", cause="host.97-after-signin")
    assert found[cause] == 1
    last_97 = series("pos_agent_last_97_timestamp_seconds", serial="SIM00001234")
    assert found[last_97] == 1796083440


def test_offline_after_a_stop() -> None:
    found = samples(textfile.render({**MESSAGE, "state": "offline"}, COUNTERS))
    states = {dict(k[1])["state"]: v for k, v in found.items() if k[0] == "pos_agent_state"}
    assert states == {"registered": 0, "recovering": 0, "unregistered": 0, "offline": 1}


def test_hostile_text_stays_inside_its_label() -> None:
    message = {**MESSAGE, "tid": HOSTILE, "cause": HOSTILE, "serial": HOSTILE,
               "acquirer": {"host": HOSTILE, "nii": "0001"}, "version": HOSTILE}  # fmt: skip
    text = textfile.render(message, COUNTERS)
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    found = samples(text)  # one sample per line: no newline got out of a label
    shown = 'a"b\\c\ufffdd\ufffd\ufffd]0;owned\ufffd\ufffd[2J\ufffdevil'
    info = [dict(labels) for name, labels in found if name == "pos_agent_info"]
    assert info == [{"serial": shown, "tid": shown, "version": shown}]
    [merchant] = [dict(labels) for name, labels in found if name == "pos_agent_acquirer_info"]
    assert merchant == {"serial": shown, "mid": "898100012340001", "acquirer": shown}
    assert series("pos_agent_cause_info", serial=shown, cause=shown) in found


def test_a_huge_cause_is_clipped() -> None:
    text = textfile.render({**MESSAGE, "cause": "x" * 30_000_000}, COUNTERS)
    assert len(text) < 10_000
    [cause] = [dict(k[1])["cause"] for k in samples(text) if k[0] == "pos_agent_cause_info"]
    assert len(cause) == textfile.LABEL_MAX and cause.endswith("…")


def test_times_that_are_absent_or_unreadable_are_0() -> None:
    message = {**MESSAGE, "since": "yesterday", "last_97": None}
    found = samples(textfile.render(message, COUNTERS))
    assert found[series("pos_agent_state_since_timestamp_seconds", serial="SIM00001234")] == 0


@given(st.text(max_size=300), st.text(max_size=300))
def test_any_text_gives_valid_exposition(tid: str, cause: str) -> None:
    found = samples(textfile.render({**MESSAGE, "tid": tid, "cause": cause}, COUNTERS))
    [info] = [dict(labels) for name, labels in found if name == "pos_agent_info"]
    [shown] = [dict(labels)["cause"] for name, labels in found if name == "pos_agent_cause_info"]
    for original, label in ((tid, info["tid"]), (cause, shown)):
        assert len(label) <= textfile.LABEL_MAX
        unshowable = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # control, format, surrogate, separators
        assert not [c for c in label if unicodedata.category(c) in unshowable]
        assert len(label.splitlines()) <= 1
        if len(original) <= textfile.LABEL_MAX and original.isprintable():
            assert label == original  # printable text comes through unchanged


def test_write_makes_a_0644_file_under_umask_077(tmp_path: Path) -> None:
    target = tmp_path / "pos-agent.prom"
    target.write_text("old\n")
    target.chmod(0o600)  # as the agent wrote it before
    old_inode = target.stat().st_ino
    previous = os.umask(0o077)
    try:
        textfile.write(target, MESSAGE, COUNTERS)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.stat().st_ino != old_inode  # replaced by a rename, not rewritten in place
    assert target.read_text() == textfile.render(MESSAGE, COUNTERS)
    assert [p.name for p in tmp_path.iterdir()] == ["pos-agent.prom"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "pos-agent.prom"
    target.mkdir()  # the rename cannot replace a folder
    with pytest.raises(OSError):
        textfile.write(target, MESSAGE, COUNTERS)
    assert [p.name for p in tmp_path.iterdir()] == ["pos-agent.prom"]


def test_a_link_where_the_temporary_goes_is_not_written_through(tmp_path: Path) -> None:
    """A temporary name of an earlier process with the same id, made a symbolic link: the write
    replaces the link and never writes to what it points at."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched\n")
    target = tmp_path / "pos-agent.prom"
    (tmp_path / f".pos-agent.prom.{os.getpid()}.tmp").symlink_to(elsewhere)
    textfile.write(target, MESSAGE, COUNTERS)
    assert elsewhere.read_text() == "untouched\n"
    assert target.read_text() == textfile.render(MESSAGE, COUNTERS)
