"""The terminal's side of the fleet (DESIGN.md section 14, issue 24) against a real Mosquitto and
a real `agent run`, read by an independent subscriber: topics by the module serial (no ghost
when the TID changes), event ids that never repeat (an empty outbox, a restart, a journal moved
aside), username and password, MQTT 3.1.1 where configured, operator commands (only over TLS
with a pinned CA; expired, repeated and unknown ones refused; every one journalled), and the
acquirer's host-side incident (no re-provisioning, the merchant told it is the acquirer's
fault)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.gateway_rig import PAN
from tests.integration.test_telemetry import SERIAL, TID, last_state, start, with_telemetry
from tests.processes import MosquittoProcess, Subscriber, control, pay, retain, wait_for


def events_of(subscriber: Subscriber) -> list[dict]:
    return subscriber.of("/event")


def journal_events(tmp_path: Path, kind: str) -> list[dict]:
    from agent.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite3", read_only=True)
    try:
        return [e for e in journal.events() if e["kind"] == kind]
    finally:
        journal.close()


def test_event_ids_never_repeat_across_an_empty_outbox_a_restart_and_a_new_journal(
    tmp_path, simulators, broker
) -> None:
    host, _, config = simulators
    with_telemetry(config, broker)
    fleet = Subscriber(broker, f"pos/{SERIAL}/event")

    def a_97_and_its_recovery(count: int) -> None:
        # signed in since this start (the journal's last sign-in may be an earlier agent's)
        wait_for(lambda: control(tmp_path / "control.sock", b'{"cmd": "status"}')["state"]
                 == "registered", 15, "this agent's sign-in")  # fmt: skip
        host.post(f"/terminals/{TID}/forget")
        assert pay(tmp_path / "agent.sock").text(39) == "00"
        wait_for(lambda: len(events_of(fleet)) >= count, 20, f"{count} events")

    agent = start(tmp_path, config)
    try:
        a_97_and_its_recovery(2)  # published and acknowledged: the outbox is empty again
        a_97_and_its_recovery(4)
    finally:
        assert agent.stop() == 0
    agent = start(tmp_path, config)  # a restart
    try:
        a_97_and_its_recovery(6)
    finally:
        assert agent.stop() == 0
    journal = tmp_path / "journal.sqlite3"
    for companion in journal.parent.glob("journal.sqlite3-*"):
        companion.unlink()
    journal.write_bytes(b"not a journal " * 512)  # damaged: the agent moves it aside
    agent = start(tmp_path, config)
    try:
        a_97_and_its_recovery(8)
    finally:
        assert agent.stop() == 0
    events = events_of(fleet)
    ids = [event["id"] for event in events]
    assert "journal-damaged" in [event["kind"] for event in events]
    assert ids == sorted(set(ids)), ids  # each new, none again
    fleet.close()


def test_the_topic_is_the_serial_so_a_new_tid_leaves_no_ghost(tmp_path, simulators, broker):
    host, _, config = simulators
    with_telemetry(config, broker)
    agent = start(tmp_path, config)
    assert agent.stop() == 0
    host.post("/terminals", {"tid": "10000002", "mid": "898100012340001"})
    config.write_text(config.read_text().replace(f'tid = "{TID}"', 'tid = "10000002"'))
    agent = start(tmp_path, config)  # re-provisioned: another TID, the same module
    try:
        fleet = Subscriber(broker, "pos/+/state", client_id="later")
        wait_for(lambda: last_state(fleet).get("tid") == "10000002", 10, "the new TID")
        assert {topic for topic, _, _ in fleet.messages} == {f"pos/{SERIAL}/state"}
        fleet.close()
    finally:
        assert agent.stop() == 0


def test_a_broker_with_username_and_password(tmp_path, simulators) -> None:
    broker = MosquittoProcess(tmp_path, users={"terminal": "s3cret pass", "fleet": "f"})
    try:
        _, _, config = simulators
        password = tmp_path / "mqtt-password"
        password.write_text("s3cret pass\n")
        with_telemetry(config, broker, username="terminal", password_file=str(password))
        agent = start(tmp_path, config)
        try:
            log = broker.config.parent / "mosquitto.log"
            wait_for(lambda: f"as pos-agent-{SERIAL}" in log.read_text(), 15, "the connection")
            assert "not authorised" not in log.read_text()
        finally:
            assert agent.stop() == 0
        password.write_text("wrong\n")
        agent = start(tmp_path, config)
        try:
            wait_for(lambda: "telemetry broker" in (tmp_path / "agent.log").read_text(), 15,
                     "the refusal logged")  # fmt: skip
            assert pay(tmp_path / "agent.sock").text(39) == "00"  # payments never wait for it
        finally:
            assert agent.stop() == 0
    finally:
        broker.stop()


def test_mqtt_3_1_1_where_configured(tmp_path, simulators, broker) -> None:
    _, _, config = simulators
    with_telemetry(config, broker, protocol="3.1.1")
    fleet = Subscriber(broker, f"pos/{SERIAL}/state")
    agent = start(tmp_path, config)
    try:
        wait_for(lambda: last_state(fleet).get("state") == "registered", 10, "the state")
        log = (broker.config.parent / "mosquitto.log").read_text()
        assert f"as pos-agent-{SERIAL} (p2," in log  # protocol level 4: MQTT 3.1.1
    finally:
        assert agent.stop() == 0
        fleet.close()


# --------------------------------------------------------------------------- commands


class Operator:
    """An operator's client on the TLS broker: sends commands, collects their results."""

    def __init__(self, broker: MosquittoProcess, ca: Path) -> None:
        import paho.mqtt.client as mqtt

        self.results: dict[str, dict] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
        self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = self._received
        self.client.connect("localhost", broker.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, "the operator's connection")
        self.client.subscribe(f"pos/{SERIAL}/cmd/+/result", qos=1)
        time.sleep(0.3)  # the SUBACK: results of the first command must not be missed

    def _received(self, client, userdata, message) -> None:
        command_id = message.topic.split("/")[-2]
        self.results[command_id] = json.loads(message.payload)

    def send(self, cmd: str, args: dict | None = None, expires_in: float = 60,
             command_id: str | None = None) -> str:  # fmt: skip
        command_id = command_id or uuid.uuid4().hex
        expires = (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat()
        payload = {"cmd": cmd, "args": args or {}, "expires": expires.replace("+00:00", "Z")}
        self.client.publish(f"pos/{SERIAL}/cmd/{command_id}", json.dumps(payload), 1)
        return command_id

    def result(self, command_id: str, seconds: float = 20) -> dict:
        wait_for(lambda: command_id in self.results, seconds, f"the result of {command_id}")
        return self.results.pop(command_id)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def tls_broker(tmp_path):
    from tests.tls_certs import make_server

    files = make_server(tmp_path / "pki", "localhost")
    broker = MosquittoProcess(tmp_path, tls=files, client_certificate=False)
    yield broker, files
    broker.stop()


def test_commands_over_tls_are_carried_out_refused_and_journalled(tmp_path, simulators,
                                                                  tls_broker) -> None:  # fmt: skip
    broker, files = tls_broker
    _, _, config = simulators
    with_telemetry(config, broker, ca_file=str(files.ca))
    config.write_text(config.read_text() + "commands = true\ncommands_per_minute = 3\n")
    agent = start(tmp_path, config)
    operator = Operator(broker, files.ca)
    try:
        wait_for(lambda: "telemetry: connected" in (tmp_path / "agent.log").read_text(), 15,
                 "the agent's connection")  # fmt: skip
        time.sleep(0.5)  # its subscription to cmd/+
        ok = operator.result(operator.send("selftest"))
        assert ok["ok"] is True and "healthy" in ok["detail"], ok
        assert ok["at"]
        journal = operator.result(operator.send("journal", {"count": 3}))
        assert journal["ok"] and len(journal["detail"]["entries"]) == 3
        # masked, like agent journal (a fragment of digits of its own: an "at" of epoch seconds
        # may hold any four)
        assert PAN[6:-4] not in json.dumps(journal)
        expired = operator.result(operator.send("signin", expires_in=-5))
        assert not expired["ok"] and "expired" in expired["detail"]
        once = operator.send("journal", {"count": 1}, command_id="fixed-id-1")
        assert operator.result(once)["ok"]
        operator.send("journal", {"count": 1}, command_id="fixed-id-1")
        again = operator.result("fixed-id-1")
        assert not again["ok"] and "received before" in again["detail"]
        unknown = operator.result(operator.send("shell", {"run": "reboot"}))
        assert not unknown["ok"] and "unknown command" in unknown["detail"]
        # an id the agent would have to put as it is into a topic, the journal and the log
        ignored = operator.send("journal", {"count": 1}, command_id="two words " + "z" * 60)
        wait_for(lambda: "an operator command ignored" in (tmp_path / "agent.log").read_text(),
                 10, "the agent's refusal to take the command")  # fmt: skip
        assert ignored not in operator.results
        limited = operator.result(operator.send("journal", {"count": 1}))
        assert not limited["ok"] and "commands a minute" in limited["detail"]
    finally:
        operator.close()
        assert agent.stop() == 0
    journalled = journal_events(tmp_path, "command")
    outcomes = [(e["cmd"], e["outcome"]) for e in journalled]
    assert outcomes == [("selftest", "done"), ("journal", "done"), ("signin", "refused"),
                        ("journal", "done"), ("journal", "refused"), ("shell", "refused"),
                        ("journal", "refused")]  # fmt: skip
    assert all(e["id"] for e in journalled)


def test_commands_stay_off_without_tls(tmp_path, simulators, broker) -> None:
    import paho.mqtt.client as mqtt

    _, _, config = simulators
    with_telemetry(config, broker)
    config.write_text(config.read_text() + "commands = true\n")
    agent = start(tmp_path, config)
    try:
        wait_for(lambda: "commands stay off" in (tmp_path / "agent.log").read_text(), 15,
                 "the warning")  # fmt: skip
        results: list = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
        client.on_message = lambda c, u, m: results.append(m.topic)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        client.subscribe(f"pos/{SERIAL}/cmd/+/result", qos=1)
        expires = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
        client.publish(f"pos/{SERIAL}/cmd/x1", json.dumps({"cmd": "selftest", "expires": expires}),
                       1).wait_for_publish(5)  # fmt: skip
        time.sleep(2)
        assert results == []
        client.loop_stop()
        client.disconnect()
    finally:
        assert agent.stop() == 0
    assert journal_events(tmp_path, "command") == []


# --------------------------------------------------------------------------- incidents


def incident_of(acquirer: str) -> bytes:
    """The watcher's retained host-side incident for ``acquirer``, this terminal its evidence."""
    incident = {
        "acquirer": {"host": acquirer, "nii": "0003"},
        "kind": "host-side",
        "opened": datetime.now(UTC).isoformat(),
        "terminals": 25,
        "evidence": [SERIAL],
    }
    return json.dumps(incident).encode()


def test_the_retained_self_check_after_a_97_is_the_whole_one(tmp_path, simulators, broker):
    """Recovery runs the fast checks after a 97; the fleet's retained self-check is the whole
    report all the same (the watcher judges a terminal healthy by it: a failing module,
    storage or registration must be in it), the other checks run after, in the background."""
    from agent.selfcheck import checks

    host, _, config = simulators
    with_telemetry(config, broker)
    agent = start(tmp_path, config)
    fleet = Subscriber(broker, f"pos/{SERIAL}/selftest")
    try:
        host.post(f"/terminals/{TID}/forget")  # the host lost the session: 97, a sign-in
        assert pay(tmp_path / "agent.sock").text(39) == "00"
        wait_for(lambda: fleet.of("/selftest"), 15, "the retained self-check")
        time.sleep(1)  # any other report on its way
        for report in fleet.of("/selftest"):
            assert [check["id"] for check in report["checks"]] == list(checks())
    finally:
        fleet.close()
        assert agent.stop() == 0


def test_an_incident_heard_while_unregistered_changes_the_cause_not_since(
    tmp_path, simulators, broker
) -> None:
    """An unregistered terminal hears its acquirer's incident: the cause it publishes becomes
    the acquirer's, but it did not become unregistered again: the fleet gets no second
    `unregistered` event and the state's `since` stays (a watcher would count the terminal as
    newly refused, and an incident closed for quiet would reopen at once)."""
    host, _, config = simulators
    with_telemetry(config, broker)
    agent = start(tmp_path, config)
    fleet = Subscriber(broker, f"pos/{SERIAL}/#")
    try:
        host.post(f"/terminals/{TID}/cancel")  # the host refuses everything: 97
        assert pay(tmp_path / "agent.sock").text(39) == "97"
        wait_for(lambda: last_state(fleet).get("cause") == "host.97-after-signin", 10,
                 "the terminal's own cause")  # fmt: skip
        since = last_state(fleet)["since"]
        acquirer = control(tmp_path / "control.sock", b'{"cmd": "status"}')["host"]["endpoint"]
        retain(broker, f"pos/incidents/{acquirer}", incident_of(acquirer))
        wait_for(lambda: last_state(fleet).get("cause") == "host.incident", 10,
                 "the acquirer's cause")  # fmt: skip
        assert last_state(fleet)["since"] == since
        time.sleep(1)  # an event would be on its way by now
        assert [e["kind"] for e in events_of(fleet)].count("unregistered") == 1
    finally:
        fleet.close()
        assert agent.stop() == 0


def test_under_a_host_side_incident_the_agent_does_not_reprovision(tmp_path, simulators,
                                                                    broker) -> None:  # fmt: skip
    """The watcher's retained incident for this acquirer: a 97 gets one sign-in, no
    re-provisioning, and the merchant is told the acquirer is at fault; closing it lets the
    terminal recover as usual."""
    host, _, config = simulators
    with_telemetry(config, broker)
    agent = start(tmp_path, config)
    try:
        status = control(tmp_path / "control.sock", b'{"cmd": "status"}')
        acquirer = status["host"]["endpoint"]
        topic = f"pos/incidents/{acquirer}"
        retain(broker, topic, incident_of(acquirer))
        wait_for(lambda: control(tmp_path / "control.sock", b'{"cmd": "status"}')["incident"],
                 10, "the incident heard")  # fmt: skip
        host.post(f"/terminals/{TID}/cancel")  # the host refuses everything: 97
        assert pay(tmp_path / "agent.sock").text(39) == "97"
        status = control(tmp_path / "control.sock", b'{"cmd": "status"}')
        assert (status["state"], status["cause"]) == ("unregistered", "host.incident")
        told = status["message"]["en"]
        assert "acquirer's host has a fault" in told
        assert "Nothing on this terminal needs doing" in told
        host.post(f"/terminals/{TID}/activate")  # the acquirer repaired its host
        retain(broker, topic, b"")
        wait_for(lambda: not control(tmp_path / "control.sock", b'{"cmd": "status"}')["incident"],
                 10, "the incident closed")  # fmt: skip
        # its end wakes the sign-in probe at once (not after recovery.incident_signin_every)
        wait_for(lambda: control(tmp_path / "control.sock", b'{"cmd": "status"}')["state"]
                 == "registered", 10, "registered again")  # fmt: skip
    finally:
        assert agent.stop() == 0
    [plan] = journal_events(tmp_path, "recovery.plan")
    assert plan["remedies"] == ["sign-in"] and plan["incident"] == "fleet incident"
    remedies = [e["remedy"] for e in journal_events(tmp_path, "recovery.remedy")]
    assert remedies == ["sign-in"]  # and no re-provisioning
    [again] = journal_events(tmp_path, "recovery.registered-again")
    assert again["why"] == "the background sign-in probe succeeded"
    assert [e["state"] for e in journal_events(tmp_path, "incident")] == ["open", "closed"]
