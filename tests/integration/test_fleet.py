"""The operator side against a real Mosquitto (DESIGN.md section 14), started by the test on a
free loopback port: `agent fleet` over hostile retained states, `agent fleet watch` (real
processes, stopped by SIGTERM) opening, sharing and closing incidents, and `agent fleet send`
against a small responder that answers as an agent would. The terminals are MQTT clients of the
test publishing what pos-agent publishes; an independent subscriber checks what is retained."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.processes import MosquittoProcess, wait_for

AGENT = str(Path(sys.executable).with_name("agent"))
HOST_A, HOST_B = "10.1.1.1:5000", "10.2.2.2:6000"
HOUR_AGO = time.time() - 3600


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def client(broker: MosquittoProcess, name: str) -> mqtt.Client:
    made = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    made.connect("127.0.0.1", broker.port)
    made.loop_start()
    return made


class Terminals:
    """Publishes what a fleet of agents publishes: retained states and self-checks, events."""

    def __init__(self, broker: MosquittoProcess) -> None:
        self.client = client(broker, "terminals")

    def publish(self, topic: str, payload: bytes | dict, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(30)

    def state(self, serial: str, name: str, since: float, host: str = HOST_A, **extra) -> None:
        message = {
            "serial": serial,
            "tusn": f"00009902{serial}",
            "tid": f"T{serial[-7:]}",
            "mid": "898100012340001",
            "acquirer": {"host": host, "nii": "0003"},
            "state": name,
            "cause": "",
            "cause_text": "",
            "since": iso(since),
            "last_97": None,
            "reversals_queued": 0,
            "reversals_stuck": 0,
            "outbox_dropped": 0,
            "seq": 1,
            "version": "test",
            "at": iso(time.time()),
            **extra,
        }
        self.publish(f"pos/{serial}/state", message, retain=True)

    def healthy(self, serial: str, host: str = HOST_A) -> None:
        """Registered an hour ago, its self-check healthy but for the host's answer."""
        checks = [
            {
                "id": check,
                "status": "fail" if check == "network" else "ok",
                "finding": f"{check}.ok",
                "summary": "",
                "detail": "",
                "remedy": "",
            }
            for check in ("provisioning", "clock", "network", "keys", "module")
        ]
        self.publish(
            f"pos/{serial}/selftest",
            {
                "ok": False,
                "duration_ms": 5,
                "tid": serial,
                "version": "test",
                "at": iso(HOUR_AGO),
                "checks": checks,
            },
            retain=True,
        )
        self.state(serial, "registered", HOUR_AGO, host)

    def refused(self, serial: str, host: str = HOST_A, with_state: bool = False) -> None:
        """A 97 (the event; ``with_state``: and the state that follows it, as agents send)."""
        now = time.time()
        self.publish(
            f"pos/{serial}/event",
            {
                "id": 7,
                "kind": "97",
                "code": "host.97",
                "at": iso(now),
                "acquirer": {"host": host, "nii": "0003"},
                "detail": {"code": "97"},
            },
        )
        if with_state:
            self.state(serial, "recovering", now, host, last_97=iso(now))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Incidents:
    """An independent subscriber to pos/incidents/#: every message, the empty ones included."""

    def __init__(self, broker: MosquittoProcess, name: str = "observer") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.on_connect = lambda c, *_: c.subscribe("pos/incidents/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, m.payload, bool(m.retain))
        )
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def of(self, host: str) -> list[dict | None]:
        return [
            json.loads(p) if p else None
            for t, p, _ in list(self.messages)
            if t == f"pos/incidents/{host}"
        ]

    def latest(self, host: str) -> dict | None:
        seen = self.of(host)
        return seen[-1] if seen else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained_incidents(broker: MosquittoProcess) -> dict[str, dict]:
    """What a subscriber that comes now finds retained."""
    later = Incidents(broker, name=f"later-{time.monotonic_ns()}")
    time.sleep(1.0)  # retained messages come at once after the subscription
    later.close()
    return {topic: json.loads(payload) for topic, payload, retained in later.messages if retained}


class Watcher:
    """`agent fleet watch` as systemd runs it, its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - open for the life of the process
        self.process = subprocess.Popen(
            [AGENT, "fleet", "watch", "--config", str(config)], stdout=self._file, stderr=self._file
        )
        wait_for(
            lambda: "watching" in self.text() or self.process.poll() is not None,
            20,
            "the watcher's subscription",
        )
        assert self.process.poll() is None, self.text()
        time.sleep(2.5)  # it settles on the retained messages before it decides anything

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self._file.close()


def fleet_config(
    tmp_path: Path, broker: MosquittoProcess, name: str = "fleet.toml", **fleet: object
) -> Path:
    lines = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in fleet.items())
    path = tmp_path / name
    path.write_text(f'[telemetry]\nbroker = "{broker.url}"\n[fleet]\n{lines}', encoding="utf-8")
    return path


def serials(host: str, count: int) -> list[str]:
    return [f"SIM{host.split('.')[1]}{n:012d}" for n in range(count)]


# ---------------------------------------------------------------------------------- agent fleet


def test_agent_fleet_counts_every_normal_state_among_hostile_ones(tmp_path, broker) -> None:
    """Before: a 200,000-deep retained state ended paho's thread, and `agent fleet` printed 0
    terminals with exit 0; ANSI escapes in a tid reached the terminal; a 30 MB cause was
    printed whole."""
    terminals = Terminals(broker)
    try:
        hostile = {
            "pos/H1/state": b"[" * 200_000 + b"]" * 200_000,  # over the bound: not even read
            "pos/H2/state": b"[" * 30_000 + b"]" * 30_000,  # under it: RecursionError
            "pos/H3/state": b"\xff\xfe\x00garbage",
            "pos/H4/state": b'["registered"]',
            "pos/H5/state": json.dumps({"state": "registered", "reversals_stuck": "many"}).encode(),
            "pos/H6/state": json.dumps(
                {"state": "unregistered", "tid": "H6", "cause": "x" * 30_000_000}
            ).encode(),
        }
        for topic, payload in hostile.items():
            terminals.publish(topic, payload, retain=True)
        ansi = "\x1b]0;pwned\x07\x1b[2J\x1b[8m"
        terminals.state(
            "A1",
            "unregistered",
            HOUR_AGO,
            tid=f"{ansi}10000001",
            cause=f"{ansi}host.97-after-signin",
        )
        normal = serials(HOST_A, 10)
        for serial in normal:
            terminals.state(serial, "registered", HOUR_AGO)
    finally:
        terminals.close()
    result = subprocess.run(
        [AGENT, "fleet", "--broker", broker.url, "--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["terminals"] == 11  # the 10 normal ones and the one with escapes, shown escaped
    assert found["by_state"] == {"registered": 10, "unregistered": 1}
    assert (found["unreadable"], found["too_large"]) == (4, 2)
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout
    [person] = found["need_a_person"]
    assert person["serial"] == "A1" and person["tid"].startswith("\\x1b]0;pwned\\x07")
    text = subprocess.run(
        [AGENT, "fleet", "--broker", broker.url], capture_output=True, timeout=60, check=False
    )
    assert text.returncode == 0, text.stderr
    assert b"\x1b" not in text.stdout and b"\x07" not in text.stdout
    shown = text.stdout.decode()
    assert "11 terminal(s): registered 10, unregistered 1" in shown
    assert "\\x1b[2J" in shown and "skipped: 4 unreadable, 2 over 64 KiB" in shown
    assert max(len(line) for line in shown.splitlines()) < 300
    assert shown.startswith("open incidents: none")


# ---------------------------------------------------------------------------- agent fleet watch


def test_25_terminals_of_one_host_open_one_incident_3_of_another_none_and_recovery_closes_it(
    tmp_path, broker
) -> None:
    many, few = serials(HOST_A, 25), serials(HOST_B, 3)
    terminals = Terminals(broker)
    observer = Incidents(broker)
    for serial in many:
        terminals.healthy(serial)
    for serial in few:
        terminals.healthy(serial, HOST_B)
    terminals.publish("pos/H1/state", b"[" * 30_000, retain=True)  # no harm to the watcher
    watcher = Watcher(fleet_config(tmp_path, broker), tmp_path / "watch.log")
    try:
        for serial in many:
            terminals.refused(serial)  # the events alone, through the shared subscription
        for serial in few:
            terminals.refused(serial, HOST_B)
        # opened at 20 or more; a count that grows by less than a tenth waits up to 30 s
        wait_for(
            lambda: (observer.latest(HOST_A) or {}).get("terminals") == 25,
            60,
            "the incident of 25 terminals",
        )
        incident = observer.latest(HOST_A)
        assert incident["kind"] == "host-side"
        assert incident["acquirer"] == {"host": HOST_A, "nii": "0003"}
        assert len(incident["evidence"]) == 10 and set(incident["evidence"]) <= set(many)
        assert None not in observer.of(HOST_A)  # never closed on the way
        assert {p["opened"] for p in observer.of(HOST_A)} == {incident["opened"]}
        time.sleep(2)  # the watcher decides every second: it has looked at host B since
        assert observer.of(HOST_B) == []
        assert list(retained_incidents(broker)) == [f"pos/incidents/{HOST_A}"]
        # the terminals are registered again: their states say so
        for serial in many:
            terminals.state(serial, "registered", time.time())
        wait_for(lambda: observer.of(HOST_A)[-1] is None, 30, "the incident closed")
        assert retained_incidents(broker) == {}
    finally:
        code = watcher.stop()
        terminals.close()
        observer.close()
    log = watcher.text()
    assert code == 0, log
    assert f"INFO agent.fleet.watcher: incident on {HOST_A} opened" in log
    assert f"incident on {HOST_A} closed: its 25 terminals are registered again" in log
    assert "Traceback" not in log


def test_two_watchers_at_once_keep_exactly_one_incident(tmp_path, broker) -> None:
    many = serials(HOST_A, 25)
    terminals = Terminals(broker)
    observer = Incidents(broker)
    for serial in many:
        terminals.healthy(serial)
    config = fleet_config(tmp_path, broker)
    first = Watcher(config, tmp_path / "first.log")
    second = Watcher(config, tmp_path / "second.log")
    third = None
    try:
        for serial in many:  # the events split between the two; the states reach both
            terminals.refused(serial, with_state=True)
        # opened at 20 or more; a count that grows by less than a tenth waits up to 30 s
        wait_for(
            lambda: (observer.latest(HOST_A) or {}).get("terminals") == 25,
            60,
            "the incident of 25 terminals",
        )
        time.sleep(3)  # both have heard each other's messages and decided again
        assert None not in observer.of(HOST_A)
        [(topic, incident)] = retained_incidents(broker).items()
        assert topic == f"pos/incidents/{HOST_A}" and incident["terminals"] == 25
        # a watcher that comes while it is open adopts it: it opens nothing
        third = Watcher(config, tmp_path / "third.log")
        for serial in serials(HOST_A, 30)[25:]:
            terminals.healthy(serial)
            terminals.refused(serial, with_state=True)
        wait_for(
            lambda: (observer.latest(HOST_A) or {}).get("terminals") == 30,
            60,
            "the incident grown to 30",
        )
        assert observer.latest(HOST_A)["opened"] == incident["opened"]
        assert "opened" not in third.text()
        assert None not in observer.of(HOST_A)
        assert list(retained_incidents(broker)) == [f"pos/incidents/{HOST_A}"]
    finally:
        codes = [w.stop() for w in (first, second, third) if w is not None]
        terminals.close()
        observer.close()
    assert codes == [0] * len(codes)


def test_a_watcher_over_mqtt_3_1_1_closes_a_quiet_incident_after_the_window(
    tmp_path, broker
) -> None:
    """MQTT 3.1.1: a plain subscription to the events; the incident closes after
    ``incident_window`` seconds without a 97, the terminals still unregistered."""
    config = fleet_config(tmp_path, broker, incident_min_terminals=5, incident_window=4)
    config.write_text(config.read_text().replace("[fleet]", 'protocol = "3.1.1"\n[fleet]'))
    terminals = Terminals(broker)
    observer = Incidents(broker)
    watcher = Watcher(config, tmp_path / "watch.log")
    try:
        assert "pos/+/event" in watcher.text() and "$share" not in watcher.text()
        for serial in serials(HOST_A, 5):
            terminals.refused(serial)
            terminals.state(serial, "unregistered", time.time())
        wait_for(lambda: observer.latest(HOST_A) is not None, 30, "the incident")
        wait_for(lambda: observer.of(HOST_A)[-1] is None, 30, "the quiet incident closed")
    finally:
        code = watcher.stop()
        terminals.close()
        observer.close()
    assert code == 0
    assert "closed: no 97 from its terminals for 4 s" in watcher.text()


# ----------------------------------------------------------------------------- agent fleet send


class Responder:
    """Answers commands as an agent does: subscribed to pos/+/cmd/+, it answers on
    <topic>/result; for SIM-BROKEN it first sends an answer that cannot be read."""

    def __init__(self, broker: MosquittoProcess, serials: set[str]) -> None:
        self.serials = serials
        self.commands: list[tuple[str, dict, bool, int]] = []  # topic, payload, retained, qos
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="responder", protocol=mqtt.MQTTv5
        )
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe("pos/+/cmd/+", qos=1)
        self.client.on_message = self._answer
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _answer(self, client, userdata, message) -> None:
        serial = message.topic.split("/")[1]
        command = json.loads(message.payload)
        self.commands.append((message.topic, command, bool(message.retain), message.qos))
        if serial not in self.serials:
            return  # offline, or commands off: no answer
        result = f"{message.topic}/result"
        if serial == "SIM-BROKEN":
            client.publish(result, b"[" * 30_000, qos=1)
        ok = command["cmd"] != "provision"
        detail = (
            {"checks": 8, "failed": 0, "note": "fine\x1b[2J"}
            if ok
            else "provision refused: the TMS does not know this module\x1b]0;x\x07"
        )
        answer = {"ok": ok, "detail": detail, "at": iso(time.time())}
        client.publish(result, json.dumps(answer), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def send(broker: MosquittoProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [AGENT, "fleet", "send", *args, "--broker", broker.url],
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_agent_fleet_send_waits_for_the_answer_and_prints_it_escaped(broker) -> None:
    responder = Responder(broker, {"SIM1", "SIM-BROKEN"})
    try:
        before = time.time()
        done = send(broker, "SIM1", "selftest", "--args", '{"only": "keys"}', "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert (answer["serial"], answer["cmd"], answer["ok"]) == ("SIM1", "selftest", True)
        assert answer["detail"]["note"] == "fine\\x1b[2J" and b"\x1b" not in done.stdout
        [(topic, command, retained, qos)] = responder.commands
        assert topic == f"pos/SIM1/cmd/{answer['id']}" and len(answer["id"]) == 32
        assert (retained, qos) == (False, 1)
        assert command["cmd"] == "selftest" and command["args"] == {"only": "keys"}
        expires = datetime.fromisoformat(command["expires"])
        assert expires.utcoffset().total_seconds() == 0 and expires.timestamp() > before + 50

        refused = send(broker, "SIM1", "provision")
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout.startswith(b"provision on SIM1: refused or failed")
        assert b"\x1b" not in refused.stdout and b"\\x1b]0;x\\x07" in refused.stdout

        skipped = send(broker, "SIM-BROKEN", "signin")  # an unreadable answer, then a good one
        assert skipped.returncode == 0, skipped.stderr
        assert skipped.stdout.startswith(b"signin on SIM-BROKEN: done")

        silent = send(broker, "SIM9", "journal", "--args", '{"count": 5}', "--timeout", "2")
        assert silent.returncode == 3
        assert b"no answer from SIM9 within 2 s" in silent.stderr
        ids = [topic.rsplit("/", 1)[1] for topic, *_ in responder.commands]
        assert len(set(ids)) == len(ids) == 4  # a fresh id every time
    finally:
        responder.close()
    for wrong in (["SIM1", "reboot"], ["SIM1", "signin", "--args", "[1]"], ["a/b", "signin"]):
        usage = send(broker, *wrong)
        assert usage.returncode == 2 and b"Traceback" not in usage.stderr, usage.stderr
