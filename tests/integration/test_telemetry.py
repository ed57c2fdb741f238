"""Fleet telemetry against a real Mosquitto (Debian's), started by the test on a free loopback
port, and a real `agent run` between the host and module simulators (DESIGN.md section 14).
The broker is stopped and started again mid-test to prove store-and-forward; no mock broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent import __version__
from tests.integration.gateway_rig import PAN
from tests.processes import (
    AgentProcess,
    MosquittoProcess,
    Subscriber,
    control,
    pay,
    wait_for,
)

TID = "10000001"
SERIAL = "SIM0000000000001"  # the module simulator's: the topics' key (DESIGN.md section 14)
STATE_KEYS = {"serial", "tusn", "tid", "mid", "acquirer", "state", "cause", "cause_text", "since",
              "last_97", "reversals_queued", "reversals_stuck", "outbox_dropped", "seq",
              "version", "at"}  # fmt: skip
AGENT = str(Path(sys.executable).with_name("agent"))


def with_telemetry(config: Path, broker: MosquittoProcess, **extra: str) -> Path:
    lines = "".join(f'{key} = "{value}"\n' for key, value in extra.items())
    config.write_text(config.read_text() + f'\n[telemetry]\nbroker = "{broker.url}"\n{lines}')
    return config


def start(tmp_path: Path, config: Path) -> AgentProcess:
    agent = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    agent.wait_ready()

    def signed_in() -> bool:
        try:  # a control socket left by an earlier agent refuses until this one binds it
            return control(tmp_path / "control.sock", b'{"cmd": "status"}')["signed_in"]
        except OSError:
            return False

    try:
        wait_for(signed_in, 15, "the sign-in")
    except BaseException:
        agent.stop()  # not left running, with its log open, into the tests after this one
        raise
    return agent


def last_state(subscriber: Subscriber) -> dict:
    states = subscriber.of("/state")
    return states[-1] if states else {}


def test_the_retained_state_is_there_after_start(tmp_path, simulators, broker) -> None:
    _, _, config = simulators
    agent = start(tmp_path, with_telemetry(config, broker))
    try:
        first = Subscriber(broker, "pos/+/state", client_id="first")
        wait_for(lambda: last_state(first).get("state") == "registered", 10, "the state")
        first.close()
        # a subscriber that comes later still finds the terminal: the state is retained
        fleet = Subscriber(broker, "pos/+/state", client_id="later")
        wait_for(lambda: fleet.messages, 10, "the retained state")
        topic, state, retained = fleet.messages[0]
        assert (topic, retained, state["state"]) == (f"pos/{SERIAL}/state", True, "registered")
        assert set(state) == STATE_KEYS
        assert (state["tid"], state["version"], state["reversals_queued"]) == (TID, __version__, 0)
        assert (state["serial"], state["tusn"]) == (SERIAL, "00009902" + SERIAL)
        assert state["acquirer"]["nii"] == "0003" and state["acquirer"]["host"]
        assert state["cause"] == "" and state["seq"] >= 1
        fleet.close()
    finally:
        assert agent.stop() == 0


def test_a_97_and_the_recovery_reach_the_fleet_in_order(tmp_path, simulators, broker) -> None:
    host, _, config = simulators
    fleet = Subscriber(broker, f"pos/{SERIAL}/#")
    agent = start(tmp_path, with_telemetry(config, broker))
    try:
        host.post(f"/terminals/{TID}/forget")  # the host lost the session: 97 until a sign-in
        assert pay(tmp_path / "agent.sock").text(39) == "00"  # recovered, retried, approved
        wait_for(lambda: [e["kind"] for e in fleet.of("/event")] == ["97", "recovered"], 15,
                 "the 97 and the recovery")  # fmt: skip
        refused, recovered = fleet.of("/event")
        assert refused["detail"]["code"] == "97" and refused["id"] < recovered["id"]
        assert (refused["code"], recovered["code"]) == ("host.97", "recovery.recovered")
        assert refused["acquirer"] == last_state(fleet)["acquirer"]
        # the TID, MID and the acquirer are in every payload (section 14)
        assert (refused["tid"], refused["mid"]) == (TID, last_state(fleet)["mid"])
        assert recovered["detail"]["code"] == "00"
        assert recovered["detail"]["remedies"] and recovered["detail"]["seconds"] >= 0
        wait_for(lambda: last_state(fleet).get("last_97") is not None, 5, "last_97")
        assert last_state(fleet)["state"] == "registered"
        # no card number, however masked (its first six: epoch seconds may hold any four digits)
        assert PAN[:6] not in json.dumps(fleet.messages)
    finally:
        assert agent.stop() == 0
        fleet.close()


def test_the_broker_away_while_the_terminal_becomes_unregistered(tmp_path, simulators,
                                                                 broker) -> None:  # fmt: skip
    """Events wait in the journal's outbox while the broker is down and arrive in order when it
    is back; the retained state then says unregistered, with its cause."""
    host, _, config = simulators
    fleet = Subscriber(broker, f"pos/{SERIAL}/#")
    agent = start(tmp_path, with_telemetry(config, broker))
    try:
        wait_for(lambda: last_state(fleet).get("state") == "registered", 10, "the first state")
        broker.stop()
        host.post(f"/terminals/{TID}/cancel")  # 97 from now on, whatever the agent does
        assert pay(tmp_path / "agent.sock").text(39) == "97"
        status = control(tmp_path / "control.sock", b'{"cmd": "status"}')
        assert status["state"] == "unregistered"
        broker.start()
        wait_for(lambda: "unregistered" in [e["kind"] for e in fleet.of("/event")], 30,
                 "the queued events")  # fmt: skip
        kinds = [e["kind"] for e in fleet.of("/event")]
        after = kinds[kinds.index("unregistered") + 1 :]
        assert kinds[0] == "97" and set(after) <= {"97"}  # then the probe's refused sign-ins
        ids = [e["id"] for e in fleet.of("/event")]
        assert ids == sorted(ids)
        wait_for(lambda: last_state(fleet).get("state") == "unregistered", 10, "the state")
        assert last_state(fleet)["cause"] == "host.97-after-signin"  # a code, not a sentence
        assert TID in last_state(fleet)["cause_text"]  # the sentence beside it
        [unregistered] = [e for e in fleet.of("/event") if e["kind"] == "unregistered"]
        assert unregistered["code"] == "host.97-after-signin"
    finally:
        assert agent.stop() == 0
        fleet.close()


def test_a_killed_agent_is_offline_by_its_will(tmp_path, simulators, broker) -> None:
    _, _, config = simulators
    fleet = Subscriber(broker, f"pos/{SERIAL}/state")
    agent = start(tmp_path, with_telemetry(config, broker))
    wait_for(lambda: last_state(fleet).get("state") == "registered", 10, "the state")
    registered = last_state(fleet)
    # a will is fixed when the connection is made: the agent connects again with a new one
    # once its state changed (here from "not signed in" at its start)
    log = broker.config.parent / "mosquitto.log"
    wait_for(lambda: log.read_text().count(f"as pos-agent-{SERIAL}") >= 2, 10, "the new will")
    agent.kill()
    # MQTT 5: the broker waits the will delay (10 s) before it publishes the will
    wait_for(lambda: last_state(fleet).get("state") == "offline", 25, "the will")
    will = last_state(fleet)
    assert will["cause"] == "telemetry.connection-lost"
    assert (will["since"], will["last_97"]) == (registered["since"], registered["last_97"])
    assert will["since"] is not None and will["seq"] > registered["seq"]
    fleet.close()


def test_a_clean_stop_says_offline_stopped_and_does_not_wait_for_a_dead_broker(
    tmp_path, simulators, broker
) -> None:
    _, _, config = simulators
    fleet = Subscriber(broker, f"pos/{SERIAL}/state")
    agent = start(tmp_path, with_telemetry(config, broker))
    wait_for(lambda: last_state(fleet).get("state") == "registered", 10, "the state")
    assert agent.stop() == 0
    wait_for(lambda: last_state(fleet).get("state") == "offline", 10, "the goodbye")
    assert last_state(fleet)["cause"] == "service.stopped"
    fleet.close()
    # and with the broker gone, the agent still stops at once
    second = start(tmp_path, config)
    broker.stop()
    assert second.stop() == 0


def test_the_textfile_holds_the_state_for_node_exporter(tmp_path, simulators, broker) -> None:
    """Written by the running agent, readable by node_exporter's user (0644), counting the 97s
    and recoveries, and offline once the agent stops (not "registered" for ever)."""
    host, _, config = simulators
    metrics = tmp_path / "pos-agent.prom"
    agent = start(tmp_path, with_telemetry(config, broker, textfile=str(metrics)))
    try:
        registered = f'pos_agent_state{{serial="{SERIAL}",state="registered"}} 1'
        wait_for(lambda: metrics.exists() and registered in metrics.read_text(), 10, "the file")
        assert metrics.stat().st_mode & 0o777 == 0o644
        assert f'serial="{SERIAL}",tid="{TID}"}} 1' in metrics.read_text()  # pos_agent_info
        host.post(f"/terminals/{TID}/forget")
        assert pay(tmp_path / "agent.sock").text(39) == "00"
        recovered = f'pos_agent_recoveries_total{{serial="{SERIAL}"}} 1'
        wait_for(lambda: recovered in metrics.read_text(), 10, "the recovery counted")
        assert f'pos_agent_97_total{{serial="{SERIAL}"}} 1' in metrics.read_text()
        assert not list(tmp_path.glob(".pos-agent.prom.*"))  # written by rename
    finally:
        assert agent.stop() == 0
    text = metrics.read_text()
    assert f'pos_agent_state{{serial="{SERIAL}",state="offline"}} 1' in text
    assert f'pos_agent_state{{serial="{SERIAL}",state="registered"}} 0' in text


def test_agent_fleet_summarises_the_retained_states(tmp_path, simulators, broker) -> None:
    import paho.mqtt.client as mqtt

    _, _, config = simulators
    agent = start(tmp_path, with_telemetry(config, broker))
    try:
        others = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="others")
        others.connect("127.0.0.1", broker.port)
        others.loop_start()
        for tid, state, cause, since in (
            ("20000001", "unregistered", "terminal not registered (97) after sign-in",
             "2026-11-30T08:00:00+00:00"),
            ("20000002", "unregistered", "card module tampered", "2026-11-29T08:00:00+00:00"),
            ("20000003", "offline", "connection lost", "2026-11-30T09:00:00+00:00"),
        ):  # fmt: skip
            message = {"tid": tid, "mid": "898100012340002", "serial": f"S{tid}", "state": state,
                       "cause": cause, "since": since, "last_97": None, "reversals_queued": 0,
                       "reversals_stuck": 0, "version": __version__, "at": since}  # fmt: skip
            others.publish(f"pos/{tid}/state", json.dumps(message), 1, True).wait_for_publish(5)
        others.loop_stop()
        others.disconnect()

        def fleet() -> dict:
            result = subprocess.run(
                [AGENT, "fleet", "--broker", broker.url, "--json", "--config", str(config)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        # the agent publishes its signed-in state at its next look (once a second)
        wait_for(lambda: "recovering" not in fleet()["by_state"], 10, "the agent's new state")
        summary = fleet()
        assert summary["terminals"] == 4
        assert summary["by_state"] == {"registered": 1, "unregistered": 2, "offline": 1}
        need = summary["need_a_person"]
        assert [t["tid"] for t in need] == ["20000002", "20000001"]  # the longest first
        assert need[0]["why"] == "card module tampered"
        text = subprocess.run(
            [AGENT, "fleet", "--broker", broker.url, "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
        assert "20000002" in text and "unregistered" in text
    finally:
        assert agent.stop() == 0


def test_mqtts_with_the_brokers_ca_and_a_client_certificate(tmp_path, simulators) -> None:
    """TLS as a fleet runs it: the broker's certificate checked against the configured CA (and
    its name), the terminal known by its client certificate (the broker requires one)."""
    from tests.tls_certs import make_server

    files = make_server(tmp_path / "pki", "localhost", client="10000001.terminals.test")
    broker = MosquittoProcess(tmp_path, tls=files)
    try:
        _, _, config = simulators
        with_telemetry(config, broker, ca_file=str(files.ca), cert_file=str(files.client_cert),
                       key_file=str(files.client_key))  # fmt: skip
        agent = start(tmp_path, config)
        try:
            wait_for(lambda: "telemetry: connected to mqtts://localhost"
                     in (tmp_path / "agent.log").read_text(), 15, "the TLS connection")  # fmt: skip
        finally:
            assert agent.stop() == 0
        log = (broker.config.parent / "mosquitto.log").read_text()
        assert "New client connected" in log and "pos-agent-SIM" in log
    finally:
        broker.stop()


def test_agent_fleet_watch_redraws_in_place_on_a_terminal(tmp_path, broker) -> None:
    import pty
    import select

    import paho.mqtt.client as mqtt

    def publish(tid: str) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t{tid}")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        message = {"tid": tid, "state": "unregistered", "cause": "97",
                   "since": "2026-11-30T08:00:00+00:00"}  # fmt: skip
        client.publish(f"pos/{tid}/state", json.dumps(message), 1, True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()

    def read_until(master: int, text: str, seconds: float = 20) -> str:
        shown = ""
        deadline = time.monotonic() + seconds
        while text not in shown and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                shown += os.read(master, 4096).decode("utf-8", "replace")
        assert text in shown, shown
        return shown

    publish("30000001")
    master, slave = pty.openpty()
    watch = subprocess.Popen([AGENT, "fleet", "--broker", broker.url, "--watch"],
                             stdin=slave, stdout=slave, stderr=slave)  # fmt: skip
    os.close(slave)
    try:
        read_until(master, "1 terminal(s)")
        publish("30000002")
        again = read_until(master, "2 terminal(s)")
        assert "\x1b[H\x1b[J" in again  # drawn again in place, not scrolled
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 0
    finally:
        os.close(master)
        if watch.poll() is None:
            watch.kill()
            watch.wait()


def test_agent_fleet_names_a_bad_or_unreachable_broker(tmp_path) -> None:
    bad = subprocess.run([AGENT, "fleet", "--broker", "http://broker.example"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2 and "expected mqtt://HOST[:PORT]" in bad.stderr
    gone = subprocess.run([AGENT, "fleet", "--broker", "mqtt://127.0.0.1:9", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert gone.returncode == 1 and "broker mqtt://127.0.0.1:9" in gone.stderr
    assert "Traceback" not in bad.stderr + gone.stderr
