"""The MQTT side of telemetry (DESIGN.md section 14), on paho-mqtt, in a thread of its own so
that no broker, however slow or gone, can hold up a payment or the event loop.

Store and forward: events wait in the journal's outbox (written in the commit of the journal
event they come from) and go out in order, QoS 1; a row is deleted when the broker's PUBACK
comes. After a broken connection, what was not acknowledged goes again (at least once: each event
carries its outbox ``id`` for a subscriber that must not count one twice). Each connection is a
fresh client, so nothing paho keeps of an old one is sent twice. The state and the self-check
report are retained, and the will sets the state to offline when the connection is lost without
a goodbye. Reconnection waits with the agent's back-off (jitter included: a fleet whose broker
restarts does not come back in one burst)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from typing import Any

import paho.mqtt.client as mqtt

from agent.backoff import Backoff
from agent.config import TelemetryConfig
from agent.journal import Journal, JournalError
from agent.telemetry.state import Topics, iso, offline

log = logging.getLogger(__name__)

IN_FLIGHT = 20  # events published and not yet acknowledged, at most
KEEPALIVE = 60  # seconds
# A broker that restarts sees its whole fleet come back: the first pause, 5 to 10 s with jitter,
# spreads 100,000 terminals to at most 20,000 connections a second, and later ones spread more.
RECONNECT_FIRST, RECONNECT_MAX = 10.0, 600.0
GOODBYE = 1.0  # seconds a clean stop waits for the broker to take the offline state


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, TLS) of ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]``."""
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "", parts.port or (8883 if tls else 1883), tls


def new_client(client_id: str) -> mqtt.Client:
    # paho-mqtt 2 asks which callback signatures the caller expects; 1.6 (Debian 12) has one
    version = getattr(mqtt, "CallbackAPIVersion", None)
    if version is not None:
        return mqtt.Client(version.VERSION2, client_id=client_id, clean_session=True)
    return mqtt.Client(client_id=client_id, clean_session=True)


class Publisher:
    def __init__(
        self, settings: TelemetryConfig, journal: Journal, client_id: str, topics: Topics
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.client_id = client_id
        self.topics = topics
        self.connected = False
        self.last_error = ""
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._selftest: dict[str, Any] | None = None
        self._state_sent = self._selftest_sent = False
        self._work = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: dict[int, int] = {}  # paho message id: outbox row id
        self._acknowledged: list[int] = []

    # ------------------------------------------------------------------ from the event loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pos-agent telemetry", daemon=True)
        self._thread.start()

    def publish_state(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._state, self._state_sent = message, False
        self._work.set()

    def publish_selftest(self, report: dict[str, Any]) -> None:
        with self._lock:
            self._selftest, self._selftest_sent = report, False
        self._work.set()

    def wake(self) -> None:
        """The outbox has something new."""
        self._work.set()

    def stop(self) -> None:
        """Say goodbye (the state, offline) if connected, within ``GOODBYE`` seconds; never
        longer, whatever the broker does."""
        self._stopping.set()
        self._work.set()
        if self._thread is not None:
            self._thread.join(GOODBYE + 2 * 1.0)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_MAX)
        while not self._stopping.is_set():
            client = self._connect()
            if client is not None:
                backoff.succeeded()
                self._serve(client)
            if self._stopping.is_set():
                return
            pause = backoff.failed()
            log.warning("telemetry broker %s: %s; trying again in %.0f s",
                        self.settings.broker, self.last_error, pause)  # fmt: skip
            self._stopping.wait(pause)

    def _connect(self) -> mqtt.Client | None:
        host, port, tls = broker_address(self.settings.broker)
        client = new_client(self.client_id)
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        if tls:
            client.tls_set(
                ca_certs=self.settings.ca_file or None,
                certfile=self.settings.cert_file or None,
                keyfile=self.settings.key_file or None,
            )
        with self._lock:
            last = self._state
        if last is not None:
            will = offline(last, "connection lost", None)
            client.will_set(self.topics.state, json.dumps(will), qos=1, retain=True)
        try:
            client.connect(host, port, keepalive=KEEPALIVE)
            deadline = time.monotonic() + 10
            while not client.is_connected() and time.monotonic() < deadline:
                if client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS, a bad address
            self.last_error = str(exc) or type(exc).__name__
            return None
        if not client.is_connected():
            self.last_error = "the broker did not accept the connection"
            client.disconnect()
            return None
        log.info("telemetry: connected to %s as %s", self.settings.broker, self.client_id)
        self.connected, self.last_error = True, ""
        with self._lock:  # a new connection: the retained messages go again
            self._state_sent = self._selftest_sent = False
        self._in_flight.clear()
        return client

    def _serve(self, client: mqtt.Client) -> None:
        while self.connected:
            if self._stopping.is_set():
                self._goodbye(client)
                return
            self._flush(client)
            self._work.clear()
            # paho's loop waits on the socket for up to a second: one wake-up a second at most
            if client.loop(timeout=1.0) != mqtt.MQTT_ERR_SUCCESS:
                break
            self._commit_acknowledged()
        self.connected = False
        self.last_error = self.last_error or "connection lost"
        client.disconnect()

    def _flush(self, client: mqtt.Client) -> None:
        with self._lock:
            state = None if self._state_sent else self._state
            selftest = None if self._selftest_sent else self._selftest
            self._state_sent = self._state_sent or state is not None
            self._selftest_sent = self._selftest_sent or selftest is not None
        if state is not None:
            client.publish(self.topics.state, json.dumps(state, ensure_ascii=False), 1, True)
        if selftest is not None:
            client.publish(self.topics.selftest, json.dumps(selftest, ensure_ascii=False), 1, True)
        room = IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        try:
            waiting = self.journal.outbox(limit=room + len(self._in_flight))
        except JournalError as exc:
            log.warning("telemetry: the outbox cannot be read: %s", exc)
            return
        sent = set(self._in_flight.values())
        for row_id, at, kind, detail in waiting:
            if row_id in sent:
                continue
            event = {"id": row_id, "kind": kind, "at": iso(at), "detail": detail}
            info = client.publish(self.topics.event, json.dumps(event, ensure_ascii=False), 1)
            self._in_flight[info.mid] = row_id

    def _commit_acknowledged(self) -> None:
        with self._lock:
            done, self._acknowledged = self._acknowledged, []
        if done:
            try:
                self.journal.outbox_sent(done)
            except JournalError as exc:  # sent again after the next reconnect: at least once
                log.warning("telemetry: the outbox cannot be updated: %s", exc)

    def _goodbye(self, client: mqtt.Client) -> None:
        with self._lock:
            last = self._state
        if last is not None:
            info = client.publish(self.topics.state, json.dumps(offline(last, "stopped",
                                  time.time())), 1, True)  # fmt: skip
            deadline = time.monotonic() + GOODBYE
            while not info.is_published() and time.monotonic() < deadline:
                client.loop(timeout=0.1)
        self._commit_acknowledged()
        client.disconnect()
        self.connected = False

    # paho's callbacks, in this thread; *rest: paho 2 adds reason code and properties

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        row_id = self._in_flight.pop(mid, None)
        if row_id is not None:
            with self._lock:
                self._acknowledged.append(row_id)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, *rest: Any) -> None:
        self.connected = False
