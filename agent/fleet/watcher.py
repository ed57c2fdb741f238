"""``agent fleet watch`` (DESIGN.md section 14): the long-running incident watcher, the MQTT side
of :class:`~agent.fleet.incidents.IncidentBook`. It hears every terminal's retained state and
self-check and the open incidents (plain subscriptions: each watcher needs all of them), and the
events through the MQTT 5 shared subscription ``$share/pos-fleet/<prefix>/+/event``, so that any
number of watchers split the fleet's events between them. Under MQTT 3.1.1 the events are a
plain subscription: every watcher hears every event (nothing is split, nothing is lost).

All its state is in retained messages: a watcher that starts, or connects again, waits
:data:`SETTLE` seconds for them before it decides anything, so it adopts the incidents already
open instead of opening others, and does not close one whose terminals it has not heard yet."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from agent.config import FleetConfig, TelemetryConfig
from agent.fleet import payloads, topics
from agent.fleet.incidents import IncidentBook, Publication
from agent.fleet.shown import shown
from agent.fleet.subscription import Received, Subscribed, Subscription
from agent.telemetry import mqtt

log = logging.getLogger(__name__)

SHARE_GROUP = "pos-fleet"
SETTLE = 2.0  # seconds after a subscription for the retained messages to come
TICK = 1.0  # seconds between two looks when nothing arrives: a quiet incident still closes
DECIDE_EVERY = 0.5  # seconds between two decisions at least: a burst of 97s is judged whole
BATCH = 1000  # messages heard between two decisions at most
QUEUE = 10_000  # messages waiting at most; then paho waits, and the broker holds back the rest
SUBSCRIBE_TIMEOUT = 30.0


def subscriptions(settings: TelemetryConfig) -> list[str]:
    prefix = settings.topic_prefix
    events = topics.events(prefix)
    if mqtt.is_v5(settings):
        events = f"$share/{SHARE_GROUP}/{events}"
    return [events, topics.states(prefix), topics.selftests(prefix), topics.incidents(prefix)]


class Watcher:
    def __init__(
        self,
        settings: TelemetryConfig,
        fleet: FleetConfig,
        broker: str,
        notify: Callable[..., bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``notify``: systemd's notifier (READY=1, STATUS=, STOPPING=1)."""
        self.settings = settings
        self.broker = broker
        self.book = IncidentBook(fleet.incident_min_terminals, fleet.incident_window)
        self.unreadable = 0
        self._notify = notify
        self._clock = clock
        self._status = ""

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set. Raises BrokerError when the broker cannot be reached or
        refuses the subscription at the start; later losses are reconnected."""
        subscription = Subscription(
            self.settings, self.broker, subscriptions(self.settings), "watch", QUEUE
        )
        try:
            subscription.wait_subscribed(SUBSCRIBE_TIMEOUT)
            log.info(
                "watching %s (%s) for host-side incidents: %d terminals within %.0f s",
                self.broker,
                ", ".join(subscription.topics),
                self.book.min_terminals,
                self.book.window,
            )
            self._loop(subscription, stop)
        finally:
            self._notify("STOPPING=1")
            subscription.close()

    def _loop(self, subscription: Subscription, stop: threading.Event) -> None:
        settled_at = time.monotonic() + SETTLE
        decided_at = 0.0
        ready = False
        while not stop.is_set():
            item = subscription.get(TICK)
            heard = 0
            while item is not None:
                if isinstance(item, Subscribed):  # a new connection: the retained ones again
                    self.book.forget_incidents()
                    settled_at = time.monotonic() + SETTLE
                else:
                    self.hear(item)
                heard += 1
                item = subscription.get(0) if heard < BATCH else None
            if time.monotonic() < max(settled_at, decided_at + DECIDE_EVERY):
                continue
            if not ready:
                self._notify("READY=1")
                ready = True
            for publication in self.book.decide(self._clock()):
                self._publish(subscription, publication)
            decided_at = time.monotonic()
            self._tell_status()

    def hear(self, message: Received) -> None:
        """One message, into the book; one that cannot be read is counted and skipped."""
        now = self._clock()
        topic = topics.parse(self.settings.topic_prefix, message.topic)
        try:
            if topic is None:
                raise payloads.Unreadable("not a topic of the fleet's")
            if topic.kind == "incident":
                incident = payloads.read_incident(message.payload) if message.payload else None
                self.book.heard_incident(topic.key, incident, now)
            elif topic.kind == "selftest":
                healthy = payloads.read_selftest(message.payload) if message.payload else None
                self.book.heard_selftest(topic.key, healthy)
            elif message.payload and topic.kind == "state":
                self.book.heard_state(payloads.read_state(topic.key, message.payload), now)
            elif message.payload and topic.kind == "event":
                self.book.heard_event(topic.key, payloads.read_event(message.payload), now)
        except payloads.Unreadable as exc:
            self.unreadable += 1
            log.debug("skipped %s: %s", shown(message.topic), exc)
            if topic is not None and topic.kind == "selftest":  # as good as none: unknown
                self.book.heard_selftest(topic.key, None)

    def _publish(self, subscription: Subscription, publication: Publication) -> None:
        topic = topics.incident(self.settings.topic_prefix, publication.host)
        message = publication.message
        payload = b"" if message is None else json.dumps(message).encode()
        subscription.publish_later(topic, payload, retain=True)
        evidence = f" (evidence: {', '.join(message['evidence'])})" if message else ""
        # opening and closing are what an operator looks for; a count that grows is detail
        level = logging.DEBUG if publication.action == "grown" else logging.INFO
        log.log(
            level,
            "incident on %s %s: %s%s",
            publication.host,
            publication.action,
            publication.why,
            evidence,
        )

    def _tell_status(self) -> None:
        status = (
            f"{self.book.terminals} terminals heard, open incidents: "
            f"{', '.join(self.book.open_hosts) or 'none'}"
        )
        if status != self._status:
            self._notify(f"STATUS={status[:200]}")
            self._status = status
