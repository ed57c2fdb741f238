"""Telemetry's pure parts: what the fleet hears of journal events, the bounded outbox in the
journal (a real SQLite file), the textfile's metrics, and the fleet's summary."""

from __future__ import annotations

from agent.journal import Journal
from agent.telemetry import events, fleet, textfile
from agent.telemetry.state import state_message


def test_the_fleet_hears_of_97s_recoveries_and_what_needs_a_person() -> None:
    assert events.forward("recovery.refused", {"code": "97", "text": "x"})[0] == "97"
    assert events.forward("recovery.refused", {"code": "A0", "text": "MAC"}) is None
    recovered = {"code": "00", "seconds": 0.2, "remedies": ["sign-in"]}
    assert events.forward("recovery.recovered", recovered) == ("recovered", recovered)
    assert events.forward("recovery.retried", {"after": "sign-in", "code": "00"}) is None
    assert events.forward("recovery.unregistered", {"message_en": "TID wrong"}) == (
        "unregistered", {"cause": "TID wrong", "cause_zh": ""})  # fmt: skip
    assert events.forward("light-check", {"check": "keys", "result": "fail: gone"})[0] == (
        "selftest-failed")  # fmt: skip
    assert events.forward("light-check", {"check": "keys", "result": "ok: fine"}) is None
    assert events.forward("reversal-queued", {"transaction": 1}) is None  # the journal's own


def test_the_fleet_hears_of_a_request_refused_while_the_terminal_stays_registered() -> None:
    detail = {"finding": "registration.tusn-refused", "code": "97", "class": "purchase",
              "tusn": "00009902SIM0000000000001", "a2": "module", "repeated": False,
              "message_en": "have it reported", "message_zh": "请报备"}  # fmt: skip
    kind, sent = events.forward("request-refused", detail)
    assert kind == "request-refused" and kind in events.KINDS
    assert sent == {key: value for key, value in detail.items() if key != "message_zh"}


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
    assert [detail["text"] for _, _, _, detail in waiting] == [f"refusal {n}" for n in (2, 3, 4)]
    assert journal.outbox_dropped == 2 and journal.outbox_written == 5
    journal.outbox_sent([waiting[0][0]])
    assert len(journal.outbox()) == 2
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite3")
    assert reopened.outbox_dropped == 2  # the count survives a restart, for the state message
    reopened.close()


STATUS = {"state": "unregistered", "tid": "10000001", "mid": "898100012340001",
          "last_refusal": {"code": "97", "at": 1_764_000_000.0}, "reversals_queued": 1,
          "reversals_stuck": 1, "message": {"en": "terminal not registered", "zh": "终端未登记"},
          "host": {"last_error": ""}}  # fmt: skip


def test_the_state_message_carries_the_drop_count_and_the_textfile_the_state() -> None:
    message = state_message(STATUS, "SIM1", 1_764_000_000.0, 1_764_000_000.0, 7, 1_764_000_100.0)
    assert (message["state"], message["cause"]) == ("unregistered", "terminal not registered")
    assert (message["outbox_dropped"], message["reversals_stuck"]) == (7, 1)
    text = textfile.render({**message, "mid": 'odd "mid"\\'})
    assert 'mid="odd \\"mid\\"\\\\",state="unregistered"} 1' in text
    assert "pos_agent_telemetry_events_dropped_total{" in text and text.endswith(" 7\n")


def test_the_fleet_summary_puts_the_longest_waiting_first() -> None:
    states = [
        {"tid": "1", "state": "registered", "cause": "", "since": "2026-12-01T08:00:00+00:00"},
        {"tid": "2", "state": "unregistered", "cause": "97", "since": "2026-12-01T07:00:00+00:00"},
        {"tid": "3", "state": "unregistered", "cause": "97", "since": "2026-11-30T07:00:00+00:00"},
        {
            "tid": "4",
            "state": "registered",
            "cause": "",
            "reversals_stuck": 2,
            "since": "2026-12-01T06:00:00+00:00",
        },
    ]
    summary = fleet.summarise(states, now=lambda: 1796112000.0)  # 2026-12-01T08:00Z
    assert summary["by_state"] == {"registered": 2, "unregistered": 2}
    assert summary["by_cause"] == {"97": 2}
    assert [t["tid"] for t in summary["need_a_person"]] == ["3", "4", "2"]
    assert summary["need_a_person"][1]["why"] == "2 reversal(s) stuck"
    assert "need a person: 3" in fleet.render(summary)


def test_a_broken_forward_costs_the_journal_nothing(tmp_path, caplog) -> None:
    def broken(kind: str, detail: dict) -> tuple[str, dict]:
        raise KeyError("a bug in the mapping")

    journal = Journal(tmp_path / "j.sqlite3", forward=broken)
    journal.event("recovery.refused", code="97", text="x")
    assert [e["kind"] for e in journal.events()] == ["recovery.refused"]
    assert journal.outbox() == []
    assert "telemetry: event recovery.refused not forwarded" in caplog.text
    journal.close()


def test_a_restarted_reporter_keeps_its_one_publisher(tmp_path) -> None:
    """supervised() runs the reporter again after a failure: still one client for the broker
    (a second with the same client id would push the first off it, and back)."""
    import asyncio
    import contextlib

    from agent.config import TelemetryConfig
    from agent.telemetry.reporter import LatestReport, Reporter

    journal = Journal(tmp_path / "j.sqlite3", forward=events.forward)
    calls = [0]

    async def status() -> dict:
        calls[0] += 1
        if calls[0] == 2:  # the first look of the loop, after the publisher started
            raise RuntimeError("a bug")
        return {**STATUS, "state": "registered"}

    async def serial() -> str:
        return "SIM1"

    reporter = Reporter(
        TelemetryConfig(broker="mqtt://127.0.0.1:9"), journal, status, serial, LatestReport()
    )

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
