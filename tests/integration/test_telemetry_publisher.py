"""The publisher against a real Mosquitto (DESIGN.md section 14): the outbox on a full disk, and
the acquirer's incident topic across a connection lost."""

from __future__ import annotations

import json
import time

from agent.config import TelemetryConfig
from agent.journal import Journal
from agent.telemetry import events, publisher
from agent.telemetry.ids import HighWater
from agent.telemetry.publisher import Publisher
from agent.telemetry.state import Topics
from tests.conftest import fill_disk
from tests.processes import Subscriber, retain, wait_for

HOST = "10.0.0.5:5000"
INCIDENT = {"acquirer": {"host": HOST, "nii": "0003"}, "kind": "host-side", "terminals": 25}


def publisher_of(tmp_path, broker, journal, on_incident) -> Publisher:
    return Publisher(
        TelemetryConfig(broker=broker.url), journal, "pos-agent-SIM1", Topics("pos", "SIM1"),
        ids=HighWater(tmp_path / "ids.json", fresh=True), acquirer={"host": HOST, "nii": "0003"},
        on_incident=on_incident, on_command=None,
    )  # fmt: skip


def test_events_the_broker_has_are_not_sent_again_while_the_disk_is_full(
    tmp_path, tiny_disk, broker
) -> None:
    """Events "published in order once the broker is reachable"; telemetry never delays a
    payment: the broker has acknowledged the events, the journal cannot delete them (a full
    disk). They are not published again and again (they were, ~3,000 a second), the events after
    them still go, and the rows are deleted once the disk has room."""
    journal = Journal(tiny_disk / "journal.sqlite3", forward=events.forward)
    for number in range(30):
        journal.event("recovery.refused", code="97", text=f"refusal {number}")
    journal.checkpoint()  # the WAL emptied, as when idle: a delete needs room again
    fill_disk(tiny_disk)
    fleet = Subscriber(broker, "pos/SIM1/event")
    telemetry = publisher_of(tmp_path, broker, journal, lambda payload: None)
    telemetry.start()
    try:

        def all_there() -> bool:
            return len({e["id"] for e in fleet.of("/event")}) == 30

        wait_for(all_there, 15, "the 30 events at the fleet")
        time.sleep(3)  # three passes of the publisher's loop more
        ids = [e["id"] for e in fleet.of("/event")]
        assert sorted(ids) == sorted(set(ids)), f"{len(ids)} publications of 30 events"
        assert len(journal.outbox(100)) == 30  # the disk is full: not deleted yet
        (tiny_disk / "filler").unlink()
        wait_for(lambda: journal.outbox(100) == [], 10, "the outbox emptied once there is room")
        assert len(fleet.of("/event")) == 30
    finally:
        telemetry.stop()
        fleet.close()
        journal.close()


def test_an_incident_closed_while_the_connection_was_lost_is_closed_on_return(
    tmp_path, broker, monkeypatch
) -> None:
    """The watcher closes the incident (deletes its retained message) while this terminal is
    away from the broker: on its return nothing is retained, and it is told so (None) once the
    subscription has settled; while the incident was retained it was told the incident only."""
    monkeypatch.setattr(publisher, "RECONNECT_FIRST", 3.0)  # back in 1.5 to 3 s
    topic = f"pos/incidents/{HOST}"
    retain(broker, topic, json.dumps(INCIDENT).encode(), "watcher")
    heard: list[bytes | None] = []
    journal = Journal(tmp_path / "journal.sqlite3", forward=events.forward)
    telemetry = publisher_of(tmp_path, broker, journal, heard.append)
    telemetry.start()
    try:
        wait_for(lambda: len(heard) == 1, 10, "the retained incident")
        time.sleep(publisher.RETAINED_SETTLE + 1.5)
        assert heard == [json.dumps(INCIDENT).encode()]
        # a client with the terminal's id takes its connection (a session taken over, as after
        # a NAT lost it) and the incident is closed before the terminal is back
        retain(broker, topic, b"", "pos-agent-SIM1")
        wait_for(lambda: len(heard) == 2, 15, "the return to the broker")
        assert heard[1] is None
    finally:
        telemetry.stop()
        journal.close()
