"""Telemetry's pure parts: what the fleet hears of journal events, the bounded outbox in the
journal (a real SQLite file) and the textfile's metrics. The operator side (``agent fleet``) is
in test_fleet.py."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from agent.fleet.topics import parse
from agent.journal import Journal
from agent.telemetry import events
from agent.telemetry.commands import Commands
from agent.telemetry.ids import HighWater
from agent.telemetry.state import Identity, Topics, iso, offline, state_message, topic_level


def test_the_fleet_hears_of_97s_recoveries_and_what_needs_a_person() -> None:
    assert events.forward("recovery.refused", {"code": "97", "text": "x"}) == (
        "97", {"code": "host.97", "detail": {"code": "97", "text": "x"}})  # fmt: skip
    assert events.forward("recovery.refused", {"code": "A0", "text": "MAC"}) is None
    recovered = {"code": "00", "seconds": 0.2, "remedies": ["sign-in"]}
    assert events.forward("recovery.recovered", recovered) == (
        "recovered", {"code": "recovery.recovered", "detail": recovered})  # fmt: skip
    assert events.forward("recovery.retried", {"after": "sign-in", "code": "00"}) is None
    unregistered = {"cause": "host.97-after-signin", "message_en": "TID wrong"}
    assert events.forward("recovery.unregistered", unregistered) == (
        "unregistered", {"code": "host.97-after-signin",
                         "detail": {"cause_text": "TID wrong", "cause_zh": ""}})  # fmt: skip
    failed = {"check": "keys", "finding": "kcv-mismatch", "result": "fail: gone"}
    assert events.forward("light-check", failed)[:1] == ("selftest-failed",)
    assert events.forward("light-check", failed)[1]["code"] == "keys.kcv-mismatch"
    assert events.forward("light-check", {"check": "keys", "result": "ok: fine"}) is None
    assert events.forward("reversal-queued", {"transaction": 1}) is None  # the journal's own


def test_an_event_keeps_the_tid_and_mid_it_was_recorded_under(tmp_path) -> None:
    """Section 14: the TID and MID are in every payload; an event that waits in the outbox
    across a re-provisioning keeps the terminal it was recorded under."""
    terminal = ["10000001", "898100012340001"]
    journal = Journal(tmp_path / "journal.sqlite3",
                      forward=events.forwarder(lambda: (terminal[0], terminal[1])))  # fmt: skip
    journal.note("recovery.refused", code="97", text="terminal not registered")
    journal.next_stan()  # the note goes in with a commit
    terminal[0] = "10000009"  # re-provisioned
    [(_, _, kind, told)] = journal.outbox()
    assert kind == "97"
    assert (told["tid"], told["mid"]) == ("10000001", "898100012340001")
    assert told["code"] == "host.97" and told["detail"]["code"] == "97"
    journal.close()


def test_the_fleet_hears_of_a_request_refused_while_the_terminal_stays_registered() -> None:
    detail = {"finding": "registration.tusn-refused", "code": "97", "class": "purchase",
              "tusn": "00009902SIM0000000000001", "a2": "module", "repeated": False,
              "message_en": "have it reported", "message_zh": "请报备"}  # fmt: skip
    kind, sent = events.forward("request-refused", detail)
    assert kind == "request-refused" and kind in events.KINDS
    assert sent["code"] == "registration.tusn-refused"
    assert sent["detail"] == {key: value for key, value in detail.items() if key != "message_zh"}


def test_every_kind_the_fleet_hears_is_one_design_names() -> None:
    samples = [("recovery.refused", {"code": "97"}), ("recovery.recovered", {}),
               ("recovery.registered-again", {}), ("recovery.unregistered", {}),
               ("request-refused", {}), ("reversal-stuck", {}),
               ("light-check", {"result": "fail: x"}), ("parameters-downloaded", {}),
               ("journal-damaged", {}), ("command", {"cmd": "selftest"})]  # fmt: skip
    for kind, detail in samples:
        told, payload = events.forward(kind, detail)
        assert told in events.KINDS and payload["code"]


def test_a_new_journal_numbers_its_events_above_what_the_fleet_saw(tmp_path) -> None:
    """A journal moved aside (damaged) or lost: the fresh one's ids start above the highest
    the fleet was ever given, which the file beside the journal keeps."""
    marks = HighWater(tmp_path / "telemetry-ids.json", fresh=True)
    assert (marks.event_id, marks.seq) == (0, 0)
    assert marks.reach(event_id=41, seq=7)
    again = HighWater(tmp_path / "telemetry-ids.json")
    assert (again.event_id, again.seq) == (41, 7)
    again.reach(event_id=3)  # never lower
    assert HighWater(tmp_path / "telemetry-ids.json").event_id == 41
    journal = Journal(tmp_path / "fresh.sqlite3", forward=events.forward,
                      outbox_ids_above=again.event_id)  # fmt: skip
    journal.event("recovery.refused", code="97", text="first of a new journal")
    assert [row[0] for row in journal.outbox()] == [42]
    journal.close()


def test_lost_marks_beside_a_journal_go_on_from_the_clock(tmp_path) -> None:
    """The file lost or damaged beside a journal that numbered events: the numbers go on from
    the clock (microseconds), above any counted before; a terminal's first start counts from 0."""
    journal = tmp_path / "journal.sqlite3"
    assert (HighWater.beside(journal).event_id, HighWater.beside(journal).seq) == (0, 0)
    marks = HighWater.beside(journal)
    marks.reach(event_id=3_000_002, seq=3_000_002)
    journal.write_bytes(b"")  # the journal is there now
    (tmp_path / "telemetry-ids.json").write_text("{broken")
    clock = lambda: 1_796_000_000.25  # noqa: E731
    damaged = HighWater(tmp_path / "telemetry-ids.json", clock=clock)
    assert (damaged.event_id, damaged.seq) == (1_796_000_000_250_000,) * 2
    (tmp_path / "telemetry-ids.json").unlink()
    lost = HighWater.beside(journal)
    assert lost.seq > 3_000_002 and lost.event_id > 3_000_002
    assert lost.seq >= int(time.time() * 1_000_000) - 10_000_000


def test_event_ids_never_start_again_when_the_outbox_empties(tmp_path) -> None:
    """A subscriber drops repeats by id: an id is never given twice, also once everything
    was published and the outbox is empty, and across a restart."""
    path = tmp_path / "j.sqlite3"
    journal = Journal(path, forward=events.forward)
    seen = []
    for n in range(3):
        journal.event("recovery.refused", code="97", text=f"refusal {n}")
        waiting = journal.outbox()
        journal.outbox_sent([row[0] for row in waiting])
        seen += [row[0] for row in waiting]
    journal.close()
    journal = Journal(path, forward=events.forward)
    journal.event("recovery.refused", code="97", text="after a restart")
    seen += [row[0] for row in journal.outbox()]
    journal.close()
    assert seen == sorted(set(seen)) and len(seen) == 4


def test_an_older_journal_keeps_its_outbox_and_numbers_past_it(tmp_path) -> None:
    import sqlite3

    from agent.journal import MIGRATIONS

    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(";".join(MIGRATIONS[:6]) + "; PRAGMA user_version = 6;")
    db.execute("INSERT INTO events (id, at, kind, detail) VALUES (40, 1.0, 'x', '{}')")
    db.execute("INSERT INTO outbox (id, at, kind, detail) VALUES (7, 1.0, '97', '{}')")
    db.commit()
    db.close()
    journal = Journal(path, forward=events.forward)
    journal.event("recovery.refused", code="97", text="after the upgrade")
    ids = [row[0] for row in journal.outbox()]
    journal.close()
    assert ids[0] == 7 and ids[1] > 40  # the waiting one kept; the new one past every event


def test_the_outbox_is_written_with_the_event_and_bounded(tmp_path) -> None:
    journal = Journal(tmp_path / "j.sqlite3", forward=events.forward, outbox_max=3)
    journal.event("reversal-queued", transaction=1)  # not the fleet's
    for n in range(5):
        journal.event("recovery.refused", code="97", text=f"refusal {n}")
    waiting = journal.outbox()
    texts = [told["detail"]["text"] for _, _, _, told in waiting]
    assert texts == [f"refusal {n}" for n in (2, 3, 4)]
    assert journal.outbox_dropped == 2 and journal.outbox_written == 5
    journal.outbox_sent([waiting[0][0]])
    assert len(journal.outbox()) == 2
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite3")
    assert reopened.outbox_dropped == 2  # the count survives a restart, for the state message
    reopened.close()


STATUS = {"state": "unregistered", "tid": "10000001", "mid": "898100012340001",
          "cause": "host.97-after-signin",
          "last_refusal": {"code": "97", "at": 1_764_000_000.0}, "reversals_queued": 1,
          "reversals_stuck": 1, "message": {"en": "terminal not registered", "zh": "终端未登记"},
          "host": {"last_error": ""}}  # fmt: skip
IDENTITY = Identity("SIM1", "00009902SIM1", {"host": "10.0.0.5:5000", "nii": "0003"})


def test_the_state_message_carries_a_cause_code_and_the_sentence_beside_it() -> None:
    message = state_message(STATUS, IDENTITY, 1_764_000_000.0, 1_764_000_000.0, 7, 1_764_000_100.0)
    assert (message["state"], message["cause"]) == ("unregistered", "host.97-after-signin")
    assert message["cause_text"] == "terminal not registered"
    assert (message["serial"], message["tusn"], message["acquirer"]["nii"]) == (
        "SIM1", "00009902SIM1", "0003")  # fmt: skip
    assert (message["outbox_dropped"], message["reversals_stuck"]) == (7, 1)
    will = offline(message, "telemetry.connection-lost", None)
    assert (will["state"], will["since"], will["last_97"]) == (
        "offline", message["since"], message["last_97"])  # fmt: skip
    assert offline(message, "service.stopped", 1_764_000_200.0)["since"] != message["since"]


def test_topics_are_keyed_by_the_serial_and_commands_are_told_apart() -> None:
    topics = Topics("pos", "SIM1")
    assert (topics.state, topics.event, topics.commands) == (
        "pos/SIM1/state", "pos/SIM1/event", "pos/SIM1/cmd/+")  # fmt: skip
    assert topics.command_id("pos/SIM1/cmd/abc") == "abc"
    assert topics.command_id("pos/SIM1/cmd/abc/result") is None
    assert topics.command_id("pos/SIM2/cmd/abc") is None
    assert topics.command_id("pos/SIM1/cmd/8c1f0e4a-7b2d-4d3e-9f10-aa55cc33ee77") is not None
    # an id that would go into a topic, the journal and a terminal as it is: not a command
    assert topics.command_id("pos/SIM1/cmd/" + "a" * 64) == "a" * 64
    for bad in ("a" * 65, "x\x1b[2Jy", "two words", "line\nbreak", "é", ""):
        assert topics.command_id(f"pos/SIM1/cmd/{bad}") is None, bad
    assert topics.incident("10.0.0.5:5000") == "pos/incidents/10.0.0.5:5000"


def test_a_serial_is_one_topic_level_the_fleets_tools_read() -> None:
    """A module serial is printable ASCII, spaces included (section 5: space-padded): the
    topic level made of it holds no space, separator or wildcard, so `agent fleet` and the
    watcher, which skip any level that does, see the terminal."""
    for serial, level in (("PAX A920 000123  ", "PAX_A920_000123"), ("a/b+c#d", "a_b_c_d"),
                          ("SIM\t1", "SIM_1"), ("   ", "unknown")):  # fmt: skip
        assert topic_level(serial) == level
        assert parse("pos", f"pos/{topic_level(serial)}/state") is not None


def test_a_broken_forward_costs_the_journal_nothing(tmp_path, caplog) -> None:
    def broken(kind: str, detail: dict) -> tuple[str, dict]:
        raise KeyError("a bug in the mapping")

    journal = Journal(tmp_path / "j.sqlite3", forward=broken)
    journal.event("recovery.refused", code="97", text="x")
    assert [e["kind"] for e in journal.events()] == ["recovery.refused"]
    assert journal.outbox() == []
    assert "telemetry: event recovery.refused not forwarded" in caplog.text
    journal.close()


def reporter_of(tmp_path, journal: Journal, telemetry, status, serial):
    """A reporter as the service builds it, with ``telemetry`` settings, the agent's ``status``
    and the module's ``serial`` (the TUSN asked the same way), a state that never changes."""
    from agent.config import Config
    from agent.recovery.incident import HostIncident
    from agent.telemetry.reporter import ModuleIdentity, Reporter
    from agent.telemetry.reports import LatestReport

    async def unchanged() -> None:
        await asyncio.sleep(3600)

    config = Config(telemetry=telemetry)
    return Reporter(
        lambda: config,
        journal,
        status,
        unchanged,
        ModuleIdentity(serial, serial),
        LatestReport(),
        ids=HighWater(tmp_path / "ids.json", fresh=True),
        incident=HostIncident(),
        commands=None,
    )


def test_a_restarted_reporter_keeps_its_one_publisher(tmp_path) -> None:
    """supervised() runs the reporter again after a failure: still one client for the broker
    (a second with the same client id would push the first off it, and back)."""
    import contextlib

    from agent.config import TelemetryConfig

    journal = Journal(tmp_path / "j.sqlite3", forward=events.forward)
    calls = [0]

    async def status() -> dict:
        calls[0] += 1
        if calls[0] == 2:  # the first look of the loop, after the publisher started
            raise RuntimeError("a bug")
        return {**STATUS, "state": "registered"}

    async def serial() -> str:
        return "SIM1"

    telemetry = TelemetryConfig(broker="mqtt://127.0.0.1:9")
    reporter = reporter_of(tmp_path, journal, telemetry, status, serial)

    async def twice() -> tuple[object, object]:
        with contextlib.suppress(RuntimeError):
            await reporter.run()
        first = reporter.publisher
        task = asyncio.ensure_future(reporter.run())
        await asyncio.sleep(0.1)
        task.cancel()
        return first, reporter.publisher

    first, second = asyncio.run(twice())
    assert first is not None and first is second
    asyncio.run(reporter.close())
    journal.close()


# ------------------------------------------------------------------------------ commands


def command(cmd: str, expires_in: float = 60, **extra) -> bytes:
    expires = (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat()
    return json.dumps({"cmd": cmd, "args": {}, "expires": expires, **extra}).encode()


@pytest.fixture
def commands(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    done: list[str] = []

    async def selftest(args: dict) -> dict:
        done.append("selftest")
        return {"healthy": True}

    async def signin(args: dict) -> str:
        raise RuntimeError("the host did not answer")

    handler = Commands({"selftest": selftest, "signin": signin}, journal, lambda: 3)
    yield handler, journal, done
    journal.close()


def test_a_command_is_carried_out_once_and_journalled(commands) -> None:
    handler, journal, done = commands
    first = asyncio.run(handler.handle("c1", command("selftest")))
    assert first["ok"] and first["detail"] == {"healthy": True} and first["at"]
    again = asyncio.run(handler.handle("c1", command("selftest")))
    assert not again["ok"] and "received before" in again["detail"]
    failed = asyncio.run(handler.handle("c2", command("signin")))
    assert (failed["ok"], failed["detail"]) == (False, "the host did not answer")
    assert done == ["selftest"]
    rows = [(e["id"], e["cmd"], e["outcome"]) for e in journal.events() if e["kind"] == "command"]
    assert rows == [("c1", "selftest", "done"), ("c1", "selftest", "refused"),
                    ("c2", "signin", "failed")]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (command("selftest", expires_in=-1), "expired at"),
        (command("selftest", expires_in=10 * 86_400), "expires more than"),
        (command("reboot"), "unknown command 'reboot'"),
        (json.dumps({"cmd": "selftest", "expires": "2026-12-06T10:00:00"}).encode(), "time zone"),
        (json.dumps({"cmd": "selftest"}).encode(), '"expires" is missing'),
        (b"[" * 200_000, "at most 4096"),
        (b"[" * 4000, "not JSON"),
        (json.dumps({"cmd": "selftest", "args": [1], "expires": "x"}).encode(), '"args"'),
    ],
)
def test_what_is_not_a_command_to_carry_out_is_refused(commands, payload, said) -> None:
    handler, _, done = commands
    result = asyncio.run(handler.handle("c9", payload))
    assert not result["ok"] and said in result["detail"], result
    assert done == []


def test_an_id_is_refused_a_day_long_whatever_became_of_it(tmp_path) -> None:
    """Resent after it expired, or after it was refused, a command id is still a repeat
    (DESIGN.md section 14), in the same run and after a restart, for a day."""
    journal = Journal(tmp_path / "journal.sqlite3")
    now = [time.time()]
    done: list[str] = []

    async def selftest(args: dict) -> str:
        done.append("selftest")
        return "healthy"

    def handle(handler: Commands, command_id: str, expires_in: float = 60) -> dict:
        payload = {"cmd": "selftest", "args": {}, "expires": iso(now[0] + expires_in)}
        return asyncio.run(handler.handle(command_id, json.dumps(payload).encode()))

    handler = Commands({"selftest": selftest}, journal, lambda: 100, clock=lambda: now[0])
    assert handle(handler, "a")["ok"]
    assert not handle(handler, "b", expires_in=-5)["ok"]  # expired when it came
    now[0] += 3600  # a's expiry long past: both resent with a fresh one
    assert "received before" in handle(handler, "a")["detail"]
    assert "received before" in handle(handler, "b")["detail"]
    restarted = Commands({"selftest": selftest}, journal, lambda: 100, clock=lambda: now[0])
    assert "received before" in handle(restarted, "b")["detail"]
    now[0] += 86_400  # a day after: forgotten, taken as new
    assert handle(handler, "a")["ok"]
    assert done == ["selftest", "selftest"]
    journal.close()


def test_commands_over_the_rate_are_refused(commands) -> None:
    handler, _, _ = commands
    results = [asyncio.run(handler.handle(f"r{n}", command("selftest"))) for n in range(4)]
    assert [r["ok"] for r in results] == [True, True, True, False]
    assert "commands a minute" in results[-1]["detail"]


def test_a_repeat_after_a_restart_is_still_a_repeat(commands, tmp_path) -> None:
    handler, journal, _ = commands
    assert asyncio.run(handler.handle("c1", command("selftest")))["ok"]

    async def selftest(args: dict) -> str:
        return "ran again"

    restarted = Commands({"selftest": selftest}, journal, lambda: 3)
    again = asyncio.run(restarted.handle("c1", command("selftest")))
    assert not again["ok"] and "received before" in again["detail"]


def test_pahos_unused_imports_stay_deferred_until_used() -> None:
    """paho imports urllib.request, uuid and hashlib at its top for what the agent never uses
    (3.5 MB): they stay stand-ins until something really uses one, which then works as ever."""
    import subprocess
    import sys

    probe = (
        "import sys, agent.telemetry.publisher\n"
        "names = ('urllib.request', 'uuid', 'hashlib', 'http.client', 'email')\n"
        "print([type(sys.modules.get(n)).__name__ for n in names])\n"
        "import uuid, hashlib, urllib.request\n"
        "print(len(uuid.uuid4().hex), hashlib.sha1(b'').hexdigest()[:8],"
        " callable(urllib.request.urlopen), type(sys.modules['uuid']).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()  # fmt: skip
    assert out[0] == "['_Deferred', '_Deferred', '_Deferred', 'NoneType', 'NoneType']"
    assert out[1] == "32 da39a3ee True module"


def test_the_textfile_does_not_wait_for_the_modules_serial(tmp_path) -> None:
    """MQTT needs the serial (its topics' key); node_exporter does not: while the module gives
    none, the textfile holds the state with an empty serial (and the last 97 the journal keeps
    from before a restart), and says offline at the stop."""
    from agent.config import TelemetryConfig

    journal = Journal(tmp_path / "j.sqlite3")
    textfile = tmp_path / "pos_agent.prom"

    async def status() -> dict:
        return {**STATUS, "state": "registered", "last_refusal": None}  # none since the start

    async def no_serial() -> str:
        return ""

    telemetry = TelemetryConfig(textfile=str(textfile))
    reporter = reporter_of(tmp_path, journal, telemetry, status, no_serial)

    async def a_while() -> str:
        task = asyncio.ensure_future(reporter.run())
        await asyncio.sleep(0.2)
        written = textfile.read_text()
        task.cancel()
        await reporter.close()
        return written

    journal.event("recovery.refused", code="97", text="terminal not registered")
    journal.event("recovery.refused", code="96", text="system malfunction")
    (refused_97,) = [e["at"] for e in journal.events() if e.get("code") == "97"]
    assert journal.last_event_at("recovery.refused", code="97") == refused_97
    assert journal.last_event_at("recovery.refused", code="A0") is None
    written = asyncio.run(a_while())
    assert 'pos_agent_state{serial="",state="registered"} 1' in written, written
    # the last 97 the journal keeps, after a restart (the status knows none since)
    assert f'pos_agent_last_97_timestamp_seconds{{serial=""}} {int(refused_97)}' in written
    assert 'pos_agent_state{serial="",state="offline"} 1' in textfile.read_text()
    journal.close()
