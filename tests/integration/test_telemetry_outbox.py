"""The telemetry outbox on a full disk (DESIGN.md section 14: events are "published in order
once the broker is reachable"; telemetry never delays a payment). The broker has acknowledged
the events, the journal cannot delete them: they are not published again and again, the events
after them still go, and the rows are deleted once the disk has room."""

from __future__ import annotations

import time

import pytest

from agent.config import TelemetryConfig
from agent.journal import Journal
from agent.telemetry import events
from agent.telemetry.ids import HighWater
from agent.telemetry.publisher import Publisher
from agent.telemetry.state import Topics
from tests.conftest import fill_disk
from tests.processes import MosquittoProcess, Subscriber, wait_for


@pytest.fixture
def broker(tmp_path):
    mosquitto = MosquittoProcess(tmp_path)
    yield mosquitto
    mosquitto.stop()


def test_events_the_broker_has_are_not_sent_again_while_the_disk_is_full(
    tmp_path, tiny_disk, broker
) -> None:
    journal = Journal(tiny_disk / "journal.sqlite3", forward=events.forward)
    for number in range(30):
        journal.event("recovery.refused", code="97", text=f"refusal {number}")
    journal.checkpoint()  # the WAL emptied, as when idle: a delete needs room again
    fill_disk(tiny_disk)
    fleet = Subscriber(broker, "pos/SIM1/event")
    publisher = Publisher(
        TelemetryConfig(broker=broker.url), journal, "pos-agent-SIM1", Topics("pos", "SIM1"),
        ids=HighWater(tmp_path / "ids.json", fresh=True), acquirer={"host": "h:1", "nii": "0003"},
        on_incident=lambda payload: None, on_command=None,
    )  # fmt: skip
    publisher.start()
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
        publisher.stop()
        fleet.close()
        journal.close()
