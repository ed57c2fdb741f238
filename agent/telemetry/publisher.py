"""The MQTT side of telemetry (DESIGN.md section 14), on paho-mqtt, in a thread of its own so
that no broker, however slow or gone, can hold up a payment or the event loop.

Numbers never go back (:mod:`agent.telemetry.ids`): an event's id is its outbox row's, above
every id an earlier journal gave; each state carries a ``seq`` above every earlier one. The will
(MQTT 5: published 10 s after a lost connection, so a quick reconnect sends none) takes a ``seq``
``WILL_GAP`` above the connection's first, so it orders after every state of that connection,
and the states of the next connection start above it.

Besides publishing, it subscribes to the acquirer's incident topic, and to this terminal's
command topic where commands are on (over TLS with a pinned CA only), and hands what arrives to
the event loop (``on_incident``, ``on_command``); results come back through
:meth:`Publisher.publish_result`.

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
from collections.abc import Callable
from typing import Any

from agent.backoff import Backoff
from agent.config import TelemetryConfig
from agent.journal import Journal, JournalError
from agent.telemetry import mqtt as connection
from agent.telemetry.ids import HighWater
from agent.telemetry.mqtt import mqtt  # paho's client, imported as that module says
from agent.telemetry.state import COMMAND_ID_MAX, Topics, iso, offline

log = logging.getLogger(__name__)

IN_FLIGHT = 20  # events published and not yet acknowledged, at most
KEEPALIVE = 60  # seconds
# A broker that restarts sees its whole fleet come back: the first pause, 5 to 10 s with jitter,
# spreads 100,000 terminals to at most 20,000 connections a second, and later ones spread more.
RECONNECT_FIRST, RECONNECT_MAX = 10.0, 600.0
GOODBYE = 1.0  # seconds a clean stop waits for the broker to take the offline state
# seconds (MQTT 5): a connection back within them publishes no will, and resumes the session
# (its subscriptions, and the commands that came meanwhile)
WILL_DELAY = 10
WILL_GAP = 1_000_000  # seq of the will above the connection's first state (see above)
# seconds after the incident topic's SUBACK by which a retained incident has come: none then
# means none is open (one closed while this terminal was away leaves nothing retained)
RETAINED_SETTLE = 5.0
CONNECTION_LOST = "telemetry.connection-lost"  # the will's cause
STOPPED = "service.stopped"  # the cause of the goodbye


class Publisher:
    def __init__(
        self,
        settings: TelemetryConfig,
        journal: Journal,
        client_id: str,
        topics: Topics,
        *,
        ids: HighWater,
        acquirer: dict[str, str],
        on_incident: Callable[[bytes | None], None],
        on_command: Callable[[str, bytes], None] | None,
    ) -> None:
        """``on_incident`` gets each retained incident payload of the acquirer (empty: closed;
        None: the broker retains none, told ``RETAINED_SETTLE`` after each subscription);
        ``on_command`` each command (id, payload), None when commands are off. Both are
        called in this publisher's thread and must only hand over."""
        self.settings = settings
        self.journal = journal
        self.client_id = client_id
        self.topics = topics
        self.ids = ids
        self.acquirer = acquirer
        self._on_incident = on_incident
        self._on_command = on_command
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
        # rows the broker acknowledged that the outbox could not delete (a full disk): not
        # published again by this process, deleted once the journal takes it
        self._undeleted: set[int] = set()
        self._results: list[tuple[str, dict[str, Any]]] = []  # command results to publish
        self._will_basis: tuple[Any, ...] | None = None  # what the connection's will says
        # the last state's seq; the file may hold more (a will's, reserved above it)
        self._seq = ids.seq
        self._will_seq = 0
        self._incident_mid: int | None = None  # the incident subscription's, till its SUBACK
        self._incident_asked: float | None = None  # its SUBACK, till a retained one comes

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

    def publish_result(self, command_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._results.append((command_id, result))
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
                if self._serve(client):
                    continue  # left to make a new will: back at once
            if self._stopping.is_set():
                return
            pause = backoff.failed()
            log.warning("telemetry broker %s: %s; trying again in %.0f s",
                        self.settings.broker, self.last_error, pause)  # fmt: skip
            self._stopping.wait(pause)

    def _connect(self) -> mqtt.Client | None:
        broker = self.settings.broker
        v5 = connection.is_v5(self.settings)
        try:
            client = connection.new_client(self.client_id, self.settings, broker)
        except (connection.BrokerSettingsError, OSError, ValueError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            return None
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        with self._lock:
            last = self._state
        self._will_basis = _will_basis(last) if last is not None else None
        if last is not None:
            # the will orders after every state of this connection; the file keeps it, so a
            # restart's states go above it too
            self._will_seq = self._seq + WILL_GAP
            self.ids.reach(seq=self._will_seq)
            will = {**offline(last, CONNECTION_LOST, None), "seq": self._will_seq}
            properties = connection.will_properties(WILL_DELAY) if v5 else None
            client.will_set(self.topics.state, json.dumps(will, ensure_ascii=False), qos=1,
                            retain=True, properties=properties)  # fmt: skip
        try:
            connection.connect(client, broker, KEEPALIVE, WILL_DELAY if v5 else 0)
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

    def _serve(self, client: mqtt.Client) -> bool:
        """Publish until the connection ends; True when it was ended to make a new will."""
        try:
            return self._serve_until_ended(client)
        finally:  # the connection's will may be out now: later states order after it
            self._seq = max(self._seq, self._will_seq)

    def _serve_until_ended(self, client: mqtt.Client) -> bool:
        while self.connected:
            if self._stopping.is_set():
                self._goodbye(client)
                return False
            self._flush(client)
            self._work.clear()
            # paho's loop waits on the socket for up to a second: one wake-up a second at most
            if client.loop(timeout=1.0) != mqtt.MQTT_ERR_SUCCESS:
                break
            self._commit_acknowledged()
            self._none_retained()
            if self._will_outdated():
                # a will is fixed at connection: a new state (or cause) needs a new one, or a
                # lost connection would tell the fleet a stale "since". A normal DISCONNECT
                # discards the old will; the next connection carries the new one.
                self._leave(client)
                return True
        self.connected = False
        self.last_error = self.last_error or "connection lost"
        client.disconnect()
        return False

    def _none_retained(self) -> None:
        asked = self._incident_asked
        if asked is not None and time.monotonic() - asked >= RETAINED_SETTLE:
            self._incident_asked = None
            self._on_incident(None)

    def _will_outdated(self) -> bool:
        with self._lock:
            state, sent = self._state, self._state_sent
        return sent and state is not None and _will_basis(state) != self._will_basis

    def _leave(self, client: mqtt.Client) -> None:
        """End the connection cleanly once what is in flight is acknowledged (briefly)."""
        deadline = time.monotonic() + GOODBYE
        while self._in_flight and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        self._commit_acknowledged()
        client.disconnect()
        self.connected = False

    def _flush(self, client: mqtt.Client) -> None:
        with self._lock:
            state = None if self._state_sent else self._state
            selftest = None if self._selftest_sent else self._selftest
            self._state_sent = self._state_sent or state is not None
            self._selftest_sent = self._selftest_sent or selftest is not None
        if state is not None:
            self._publish_state(client, state)
        if selftest is not None:
            client.publish(self.topics.selftest, json.dumps(selftest, ensure_ascii=False), 1, True)
        self._publish_results(client)
        room = IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        sent = set(self._in_flight.values()) | self._undeleted
        try:
            waiting = self.journal.outbox(limit=room + len(sent))
        except JournalError as exc:
            log.warning("telemetry: the outbox cannot be read: %s", exc)
            return
        fresh = [row for row in waiting if row[0] not in sent]
        if fresh:
            self.ids.reach(event_id=fresh[-1][0])  # before any of them leaves
        with self._lock:
            latest = self._state or {}
        for row_id, at, kind, told in fresh:
            # rows an older version wrote hold the detail alone, without a code
            wrapped = {"code", "detail"} <= told.keys()
            code, detail = (told["code"], told["detail"]) if wrapped else ("", told)
            # the TID and MID it was recorded under; a row an older version wrote has none:
            # the latest state's
            terminal = told if wrapped and "tid" in told else latest
            event = {"id": row_id, "kind": kind, "code": code, "at": iso(at),
                     "tid": terminal.get("tid"), "mid": terminal.get("mid"),
                     "acquirer": self.acquirer, "detail": detail}  # fmt: skip
            info = client.publish(self.topics.event, json.dumps(event, ensure_ascii=False), 1)
            self._in_flight[info.mid] = row_id

    def _publish_state(self, client: mqtt.Client, state: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        self._seq += 1
        self.ids.reach(seq=self._seq)
        payload = json.dumps({**state, "seq": self._seq}, ensure_ascii=False)
        return client.publish(self.topics.state, payload, 1, True)

    def _publish_results(self, client: mqtt.Client) -> None:
        with self._lock:
            results, self._results = self._results, []
        for command_id, result in results:
            payload = json.dumps(result, ensure_ascii=False)
            client.publish(self.topics.result(command_id), payload, 1)

    def _commit_acknowledged(self) -> None:
        with self._lock:
            done, self._acknowledged = self._acknowledged, []
        if not done and not self._undeleted:
            return
        failed_before = bool(self._undeleted)
        self._undeleted.update(done)
        try:
            self.journal.outbox_sent(sorted(self._undeleted))
        except JournalError as exc:  # kept, tried again; after a restart sent again: at least once
            if not failed_before:
                log.warning("telemetry: the outbox cannot be updated (the events the broker "
                            "has are kept and not sent again): %s", exc)  # fmt: skip
            return
        if failed_before:
            log.info("telemetry: the outbox is updated again")
        self._undeleted.clear()

    def _goodbye(self, client: mqtt.Client) -> None:
        with self._lock:
            last = self._state
        if last is not None:
            info = self._publish_state(client, offline(last, STOPPED, time.time()))
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

    def _on_connect(self, client: mqtt.Client, userdata: Any, *rest: Any) -> None:
        host = self.acquirer.get("host", "")
        if host:
            self._incident_asked = None
            self._incident_mid = client.subscribe(self.topics.incident(host), qos=1)[1]
        if self._on_command is not None:
            client.subscribe(self.topics.commands, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        topic = str(message.topic)
        command_id = self.topics.command_id(topic)
        if command_id is not None and self._on_command is not None:
            self._on_command(command_id, bytes(message.payload))
        elif topic.startswith(self.topics.command_head):  # subscribed: an id not taken
            log.warning(
                "an operator command ignored: its id is not up to %d letters, digits and ._:- "
                "(topic %s)", COMMAND_ID_MAX, ascii(topic[:200])
            )  # fmt: skip
        elif topic == self.topics.incident(self.acquirer.get("host", "")):
            self._incident_mid = self._incident_asked = None
            self._on_incident(bytes(message.payload))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        if mid == self._incident_mid:
            self._incident_mid = None
            self._incident_asked = time.monotonic()


def _will_basis(state: dict[str, Any]) -> tuple[Any, ...]:
    """What of a state its will repeats: a change of these makes the will stale."""
    return tuple(state.get(key) for key in ("state", "cause", "since", "last_97", "tid"))
