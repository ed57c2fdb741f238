"""The operator side's pure parts (DESIGN.md section 14): payloads read as untrusted data, text
shown escaped and clipped, the summary, the incident decisions, the command message and the
command line's shape. The MQTT side is in tests/integration/test_fleet.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.config import FleetConfig, TelemetryConfig, load
from agent.fleet import payloads, sender, summary, topics
from agent.fleet.incidents import IncidentBook
from agent.fleet.shown import shown, shown_json
from agent.fleet.subscription import Received
from agent.fleet.watcher import Watcher, subscriptions

NOW = 1_796_112_000.0  # 2026-12-01T08:00:00Z
HOST_A, HOST_B = "10.1.1.1:5000", "10.2.2.2:6000"


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def raw(message: object) -> bytes:
    return json.dumps(message).encode()


def state(serial: str, name: str = "registered", host: str = HOST_A, **fields) -> payloads.State:
    message = {
        "serial": serial,
        "tid": f"T{serial}",
        "state": name,
        "acquirer": {"host": host, "nii": "0003"},
        **fields,
    }
    return payloads.read_state(serial, raw(message))


def event(kind: str, at: float | None, host: str = HOST_A) -> payloads.Event:
    message = {"id": 1, "kind": kind, "acquirer": {"host": host, "nii": "0003"}}
    if at is not None:
        message["at"] = iso(at)
    return payloads.read_event(raw(message))


def selftest(*failing: str) -> bytes:
    checks = [
        {"id": check, "status": "fail" if check in failing else "ok"}
        for check in ("provisioning", "clock", "network", "keys", "module")
    ]
    return raw({"ok": not failing, "checks": checks})


# ---------------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 30_000 + b"]" * 30_000,  # under the size bound, deeper than the decoder goes
        b"\xff\xfe not utf-8 {",
        b'"a string"',
        b"[1, 2]",
        b"1" * 5000,  # more digits than int() takes
        b"{" * (payloads.MAX_PAYLOAD + 1),
    ],
)
def test_hostile_payloads_are_unreadable_not_errors(payload: bytes) -> None:
    with pytest.raises(payloads.Unreadable):
        payloads.decode(payload)
    with pytest.raises(payloads.Unreadable):
        payloads.read_state("S1", payload)


@pytest.mark.parametrize(
    "message",
    [
        {"state": 1},
        {"state": "registered", "tid": 42},
        {"state": "registered", "reversals_stuck": "2"},
        {"state": "registered", "reversals_stuck": True},
        {"state": "registered", "reversals_stuck": -1},
        {"state": "registered", "since": "yesterday"},
        {"state": "registered", "acquirer": "10.1.1.1:5000"},
        {"state": "registered", "acquirer": {"host": ["x"]}},
        {"tid": "10000001"},  # no state at all
    ],
)
def test_a_state_of_the_wrong_shape_is_unreadable(message: dict) -> None:
    with pytest.raises(payloads.Unreadable):
        payloads.read_state("S1", raw(message))


def test_an_older_agents_state_with_fewer_fields_is_read() -> None:
    read = payloads.read_state("S1", raw({"tid": "1", "state": "offline", "since": None}))
    assert (read.state, read.cause, read.since_at, read.acquirer) == ("offline", "", None, None)


def test_a_self_check_is_healthy_unless_a_check_other_than_the_hosts_answer_fails() -> None:
    assert payloads.read_selftest(selftest()) is True
    assert payloads.read_selftest(selftest("network")) is True  # the host refuses everyone
    assert payloads.read_selftest(selftest("keys")) is False
    # the registration check failing for the host's refusal of the TUSN is the host's answer
    # too (a fault of the acquirer's TUSN records refuses every terminal); its other findings
    # are the terminal's
    for finding, healthy in (("registration.tusn-refused", True), ("registration.a2-missing",
                                                                   False)):  # fmt: skip
        registration = {"id": "registration", "status": "fail", "finding": finding}
        assert payloads.read_selftest(raw({"checks": [registration]})) is healthy
    for broken in (raw({"ok": True}), raw({"checks": ["x"]}), raw({"checks": {}})):
        with pytest.raises(payloads.Unreadable):
            payloads.read_selftest(broken)


def test_an_incident_round_trips_and_a_broken_one_is_unreadable() -> None:
    incident = payloads.Incident("0003", NOW, 25, ("S1", "S2"))
    message = payloads.incident_message(HOST_A, incident)
    assert message == {
        "acquirer": {"host": HOST_A, "nii": "0003"},
        "kind": "host-side",
        "opened": "2026-12-01T08:00:00+00:00",
        "terminals": 25,
        "evidence": ["S1", "S2"],
    }
    assert payloads.read_incident(raw(message)) == incident
    with pytest.raises(payloads.Unreadable):
        payloads.read_incident(raw({**message, "opened": None}))
    with pytest.raises(payloads.Unreadable):
        payloads.read_incident(raw({**message, "evidence": [1, 2]}))


def test_topics_name_their_serial_or_host() -> None:
    assert topics.parse("pos", "pos/S1/state") == topics.Topic("state", "S1")
    assert topics.parse("acme/pos", "acme/pos/S1/event") == topics.Topic("event", "S1")
    assert topics.parse("pos", f"pos/incidents/{HOST_A}") == topics.Topic("incident", HOST_A)
    assert topics.parse("pos", "pos/S1/cmd") is None
    assert topics.parse("pos", "pos/S 1/state") is None
    assert topics.parse("pos", "other/S1/state") is None
    assert not topics.is_level("a/b") and not topics.is_level("#") and not topics.is_level("")


# ---------------------------------------------------------------------------------- shown


def test_shown_escapes_what_a_terminal_would_obey_and_clips() -> None:
    assert shown("\x1b]0;owned\x07\x1b[2J") == "\\x1b]0;owned\\x07\\x1b[2J"
    assert shown("a\x9bb\u202ec\u200bd") == "a\\x9bb\\u202ec\\u200bd"  # C1 CSI, bidi, ZWSP
    assert shown("终端未登记") == "终端未登记"
    long = shown("x" * 30_000_000)
    assert len(long) == 200 and long.endswith("...")
    assert len(shown("\x1b" * 1000)) == 200
    nested = shown_json({"\x1bk": ["\x1b", 1, None, float("nan"), {"a": {"b": {}}}]}, depth=3)
    assert nested == {"\\x1bk": ["\\x1b", 1, None, "nan", {"a": "..."}]}


# ---------------------------------------------------------------------------------- summary


def received(topic: str, message: object) -> Received:
    payload = message if isinstance(message, bytes) else raw(message)
    return Received(topic, payload, True)


def test_the_fleet_summary_puts_the_longest_waiting_first() -> None:
    fleet = summary.Fleet("pos")
    fleet.take(
        [
            received(
                "pos/S1/state",
                {
                    "tid": "1",
                    "state": "registered",
                    "cause": "",
                    "since": "2026-12-01T08:00:00+00:00",
                },
            ),
            received(
                "pos/S2/state",
                {
                    "tid": "2",
                    "state": "unregistered",
                    "cause": "keys.tmk-absent",
                    "since": "2026-12-01T07:00:00+00:00",
                },
            ),
            received(
                "pos/S3/state",
                {
                    "tid": "3",
                    "state": "unregistered",
                    "cause": "keys.tmk-absent",
                    "since": "2026-11-30T07:00:00+00:00",
                },
            ),
            received(
                "pos/S4/state",
                {
                    "tid": "4",
                    "state": "registered",
                    "cause": "",
                    "reversals_stuck": 2,
                    "since": "2026-12-01T06:00:00+00:00",
                },
            ),
            received(  # paused by the acquirer's fault: nothing to do at the terminal
                "pos/S5/state",
                {
                    "tid": "5",
                    "state": "unregistered",
                    "cause": "host.incident",
                    "since": "2026-11-30T06:00:00+00:00",
                },
            ),
        ]
    )
    found = summary.summarise(fleet, now=lambda: NOW)
    assert found["by_state"] == {"registered": 2, "unregistered": 3}
    assert found["by_cause"] == {"keys.tmk-absent": 2, "host.incident": 1}
    assert [t["tid"] for t in found["need_a_person"]] == ["3", "4", "2"]
    assert found["need_a_person"][1]["why"] == "2 reversal(s) stuck"
    assert "need a person: 3" in summary.render(found)


def test_the_summary_shows_incidents_first_and_counts_what_it_skipped() -> None:
    incident = payloads.incident_message(HOST_A, payloads.Incident("0003", NOW, 25, ("S1",)))
    fleet = summary.Fleet("pos")
    fleet.take(
        [
            received(
                "pos/S1/state",
                {
                    "tid": "\x1b[2J\x1b]0;x\x07",
                    "state": "unregistered",
                    "cause": "\x1b[8m" + "c" * 1000,
                },
            ),
            received("pos/S2/state", b"[" * 30_000),
            received("pos/S3/state", {"state": ["registered"]}),
            received(f"pos/incidents/{HOST_A}", incident),
            received(f"pos/incidents/{HOST_B}", incident),
            received(f"pos/incidents/{HOST_B}", b""),  # closed
        ]
    )
    found = summary.summarise(fleet, too_large=2, now=lambda: NOW)
    assert (found["terminals"], found["unreadable"], found["too_large"]) == (1, 2, 2)
    assert [i["host"] for i in found["incidents"]] == [HOST_A]
    text = summary.render(found)
    assert text.startswith("open incidents: 1\n  10.1.1.1:5000 (NII 0003): host-side")
    assert "\x1b" not in text and "\x07" not in text and "\x1b" not in json.dumps(found)
    assert "\\x1b[2J" in text
    assert max(len(line) for line in text.splitlines()) < 300
    assert "skipped: 2 unreadable, 2 over 64 KiB" in text


# ---------------------------------------------------------------------------------- incidents


def book(min_terminals: int = 20, window: float = 300.0) -> IncidentBook:
    return IncidentBook(min_terminals, window)


def refuse(
    incidents: IncidentBook, count: int, at: float, host: str = HOST_A, first: int = 0
) -> list[str]:
    """``count`` terminals of ``host`` with a healthy self-check report a 97 at ``at``."""
    serials = [f"{host[:4]}-{n:03d}" for n in range(first, first + count)]
    for serial in serials:
        incidents.heard_state(state(serial, since=iso(at - 3600), host=host), at)
        incidents.heard_selftest(serial, True)
        incidents.heard_event(serial, event("97", at, host), at)
    return serials


def test_enough_terminals_of_one_host_open_one_incident_and_a_few_of_another_do_not() -> None:
    incidents = book()
    refuse(incidents, 19, NOW)
    refuse(incidents, 3, NOW, host=HOST_B)
    assert incidents.decide(NOW) == []
    refuse(incidents, 1, NOW + 1, first=19)
    [opened] = incidents.decide(NOW + 1)
    assert (opened.host, opened.action) == (HOST_A, "opened")
    message = opened.message
    assert message["kind"] == "host-side" and message["terminals"] == 20
    assert message["acquirer"] == {"host": HOST_A, "nii": "0003"}
    assert len(message["evidence"]) == 10 and message["opened"] == "2026-12-01T08:00:01+00:00"
    assert incidents.decide(NOW + 2) == []  # once
    assert incidents.open_hosts == [HOST_A]


def test_a_terminal_that_failed_its_own_self_check_does_not_count() -> None:
    incidents = book()
    serials = refuse(incidents, 20, NOW)
    incidents.heard_selftest(serials[0], payloads.read_selftest(selftest("keys")))
    assert incidents.decide(NOW) == []
    incidents.heard_selftest(serials[0], payloads.read_selftest(selftest("network")))
    assert len(incidents.decide(NOW)) == 1


def test_a_terminal_whose_self_check_is_unknown_counts_as_healthy() -> None:
    incidents = book()
    for n in range(20):
        incidents.heard_event(f"S{n}", event("97", NOW), NOW)
    assert [p.action for p in incidents.decide(NOW)] == ["opened"]


def test_old_97s_from_an_outbox_and_reports_outside_the_window_do_not_count() -> None:
    incidents = book()
    refuse(incidents, 10, NOW - 400)  # an hour-old outbox, sent when the broker came back
    refuse(incidents, 10, NOW, first=10)
    assert incidents.decide(NOW) == []
    refuse(incidents, 10, NOW + 200, first=20)
    assert incidents.decide(NOW + 200)[0].message["terminals"] == 20
    assert incidents.decide(NOW + 200) == []


def test_unregistered_states_count_by_their_since_and_a_time_in_the_future_by_now() -> None:
    incidents = book(min_terminals=3)
    incidents.heard_state(state("S1", "unregistered", since=iso(NOW - 10)), NOW)
    incidents.heard_state(state("S2", "unregistered", since=iso(NOW - 1000)), NOW)  # too old
    incidents.heard_state(state("S3", "recovering", last_97=iso(NOW + 86_400)), NOW)
    assert incidents.decide(NOW) == []
    incidents.heard_state(state("S4", "unregistered", since=iso(NOW)), NOW)
    [opened] = incidents.decide(NOW)
    assert set(opened.message["evidence"]) == {"S1", "S3", "S4"}
    # S3's 97 "tomorrow" counted as heard, now: it does not keep the incident open for a day
    [closed] = incidents.decide(NOW + 301)
    assert closed.action == "closed" and closed.why.startswith("no 97")


def test_an_incident_already_on_the_broker_is_not_opened_again_but_grows() -> None:
    incidents = book()
    retained = payloads.Incident("0003", NOW - 60, 22, ("X1",))
    incidents.heard_incident(HOST_A, retained, NOW)
    refuse(incidents, 20, NOW)
    assert incidents.decide(NOW) == []  # 20 counted: not more than the 22 it says
    refuse(incidents, 5, NOW, first=20)
    [grown] = incidents.decide(NOW)
    assert grown.action == "grown" and grown.message["terminals"] == 25
    assert grown.message["opened"] == iso(NOW - 60).replace(".0", "")
    assert grown.message["evidence"][0] == "X1" and len(grown.message["evidence"]) == 10
    # its own message coming back, or an older one of another watcher, changes nothing
    incidents.heard_incident(HOST_A, payloads.read_incident(raw(grown.message)), NOW)
    incidents.heard_incident(HOST_A, retained, NOW)
    assert incidents.decide(NOW + 1) == []


def test_a_count_that_grows_a_little_is_published_only_after_a_while() -> None:
    """Each new count reaches every terminal of the host: not one message per new 97."""
    incidents = book()
    refuse(incidents, 20, NOW)
    incidents.decide(NOW)
    refuse(incidents, 1, NOW + 1, first=20)
    assert incidents.decide(NOW + 1) == []  # 21: less than a tenth more
    assert incidents.decide(NOW + 29) == []
    [grown] = incidents.decide(NOW + 30)
    assert grown.message["terminals"] == 21
    refuse(incidents, 3, NOW + 31, first=21)  # 24: a tenth more than 21, at once
    assert [p.message["terminals"] for p in incidents.decide(NOW + 31)] == [24]


def test_two_watchers_that_open_at_once_both_keep_the_one_the_broker_retained() -> None:
    first, second = book(), book()
    for incidents in (first, second):
        refuse(incidents, 20, NOW)
    [a] = first.decide(NOW)
    [b] = second.decide(NOW + 1)
    for incidents in (first, second):  # the broker delivers both, in the order it took them
        incidents.heard_incident(HOST_A, payloads.read_incident(raw(a.message)), NOW + 1)
        incidents.heard_incident(HOST_A, payloads.read_incident(raw(b.message)), NOW + 1)
    assert first.decide(NOW + 2) == [] and second.decide(NOW + 2) == []


def test_registered_again_closes_it_and_a_stale_registered_state_does_not() -> None:
    incidents = book()
    serials = refuse(incidents, 20, NOW)
    incidents.decide(NOW)
    for serial in serials:  # the states that say "registered since an hour ago" are old news
        incidents.heard_state(state(serial, since=iso(NOW - 3600)), NOW + 5)
    assert incidents.decide(NOW + 5) == []
    for serial in serials[:-1]:
        incidents.heard_state(state(serial, since=iso(NOW + 10)), NOW + 10)
    assert incidents.decide(NOW + 10) == []
    incidents.heard_state(state(serials[-1], since=iso(NOW + 11)), NOW + 11)
    [closed] = incidents.decide(NOW + 11)
    assert (closed.action, closed.message) == ("closed", None)
    assert "registered again" in closed.why
    assert incidents.decide(NOW + 12) == [] and incidents.open_hosts == []


def test_it_closes_after_the_window_without_a_97_and_does_not_reopen_at_once() -> None:
    incidents = book(window=60)
    serials = refuse(incidents, 20, NOW)
    incidents.decide(NOW)
    for serial in serials:  # unregistered a little later: no 97, but a report
        incidents.heard_state(state(serial, "unregistered", since=iso(NOW + 30)), NOW + 30)
    incidents.heard_event(serials[0], event("97", NOW + 40), NOW + 40)
    assert incidents.decide(NOW + 100) == []  # 60 s after the last 97 is NOW + 100
    [closed] = incidents.decide(NOW + 101)
    assert closed.action == "closed"
    assert incidents.decide(NOW + 102) == []  # the reports before the close are spent
    refuse(incidents, 20, NOW + 103, first=100)
    assert [p.action for p in incidents.decide(NOW + 103)] == ["opened"]


def test_a_close_heard_from_another_watcher_is_taken_and_forgotten_incidents_come_again() -> None:
    incidents = book()
    refuse(incidents, 20, NOW)
    incidents.decide(NOW)
    incidents.heard_incident(HOST_A, None, NOW + 1)
    assert incidents.open_hosts == [] and incidents.decide(NOW + 2) == []
    incidents.heard_incident(HOST_B, payloads.Incident("", NOW, 20, ()), NOW + 3)
    incidents.forget_incidents()
    assert incidents.open_hosts == []


def test_a_host_that_cannot_be_a_topic_level_places_no_terminal() -> None:
    incidents = book(min_terminals=1)
    for host in ("a/b", "#", "x" * 300, "a b"):
        incidents.heard_event("S1", event("97", NOW, host=host), NOW)
    assert incidents.decide(NOW) == []


def test_the_watcher_skips_and_counts_what_it_cannot_read() -> None:
    watcher = Watcher(
        TelemetryConfig(), FleetConfig(), "mqtt://127.0.0.1:1", lambda *_: True, clock=lambda: NOW
    )
    for message in (
        received("pos/S1/state", b"[" * 30_000),
        received("pos/S1/event", {"kind": 97}),
        received("pos/S1/selftest", {"checks": "all fine"}),
        received(f"pos/incidents/{HOST_A}", {"opened": "soon"}),
        received("elsewhere/S1/state", {"state": "registered"}),
    ):
        watcher.hear(message)
    assert watcher.unreadable == 5 and watcher.book.decide(NOW) == []
    watcher.hear(received("pos/S1/event", {"kind": "97", "acquirer": {"host": HOST_A}}))
    assert watcher.book.terminals == 1


def test_the_example_operator_configuration_is_valid() -> None:
    config = load(Path(__file__).resolve().parents[2] / "docs/examples/fleet.toml")
    assert config.telemetry.broker == "mqtts://broker.example:8883"
    assert config.fleet == FleetConfig(incident_min_terminals=20, incident_window=300.0)


def test_events_are_a_shared_subscription_under_mqtt_5_only() -> None:
    assert subscriptions(TelemetryConfig()) == [
        "$share/pos-fleet/pos/+/event",
        "pos/+/state",
        "pos/+/selftest",
        "pos/incidents/+",
    ]
    assert subscriptions(TelemetryConfig(protocol="3.1.1"))[0] == "pos/+/event"


# ---------------------------------------------------------------------------------- commands


def test_a_command_message_expires_in_utc() -> None:
    message = sender.command_message("journal", {"count": 20}, 60, NOW)
    assert message == {
        "cmd": "journal",
        "args": {"count": 20},
        "expires": "2026-12-01T08:01:00+00:00",
    }
    for serial, command in (
        ("S1", "reboot"),
        ("S1", "shell"),
        ("a/b", "selftest"),
        ("#", "selftest"),
        ("", "signin"),
    ):
        with pytest.raises(ValueError):
            sender.validate(serial, command)
    sender.validate("SIM0000000000001", "incident")


def test_fleet_flags_and_its_two_subcommands_parse_apart() -> None:
    parser = build_parser()
    summary_args = parser.parse_args(["fleet", "--watch", "--json", "--broker", "mqtt://b"])
    assert (summary_args.handler, summary_args.watch, summary_args.json) == (
        "fleet:cmd_fleet",
        True,
        True,
    )
    watch = parser.parse_args(["fleet", "watch", "--config", "/etc/pos-agent/fleet.toml"])
    assert (watch.handler, str(watch.config)) == (
        "fleet:cmd_fleet_watch",
        "/etc/pos-agent/fleet.toml",
    )
    send = parser.parse_args(
        ["fleet", "send", "S1", "journal", "--args", '{"count": 5}', "--timeout", "5", "--json"]
    )
    assert (send.handler, send.serial, send.cmd, send.timeout, send.expires, send.json) == (
        "fleet:cmd_fleet_send",
        "S1",
        "journal",
        5.0,
        60.0,
        True,
    )
    for wrong in (
        ["fleet", "send", "S1"],
        ["fleet", "send", "S1", "signin", "--timeout", "0"],
        ["fleet", "wtach"],
    ):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(wrong)
        assert exited.value.code == 2
