"""One MQTT client of the operator's commands (DESIGN.md section 14), made by
:mod:`agent.telemetry.mqtt` like the terminal's: it subscribes to its topics on every connection
and hands each message to the caller's thread through a queue. paho's own thread only queues:
nothing a message holds can raise there and end the subscription (a rogue retained state used
to, and ``agent fleet`` then printed 0 terminals). A payload over
:data:`~agent.fleet.payloads.MAX_PAYLOAD` is counted and dropped before it is queued."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.config import TelemetryConfig
from agent.fleet.payloads import MAX_PAYLOAD
from agent.telemetry import mqtt

log = logging.getLogger(__name__)

KEEPALIVE = 30  # seconds
RECONNECT = (1, 30)  # paho's reconnection pauses, shortest and longest


class BrokerError(Exception):
    """The broker cannot be reached, or refused the connection, the subscription or a message;
    the text says which."""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool


@dataclass(frozen=True)
class Subscribed:
    """In the queue where a (new) connection's subscription was granted: what follows is that
    connection's, retained messages first."""


def _code(reason: Any) -> int:
    """A reason code as a number: paho 2 and 1.6 give objects, 1.6 with MQTT 3.1.1 an int."""
    return int(getattr(reason, "value", reason))


class Subscription:
    def __init__(
        self,
        settings: TelemetryConfig,
        broker: str,
        topics: Sequence[str],
        purpose: str,
        queue_size: int = 0,
    ) -> None:
        """Connect to ``broker`` and subscribe to ``topics`` (QoS 1). ``queue_size``: at most so
        many messages wait (paho's thread then waits too, and the broker holds the rest back);
        0 for no bound. Raises BrokerError, or BrokerSettingsError for settings that cannot work.
        """
        self.broker = broker
        self.topics = list(topics)
        self.inbox: queue.Queue[Received | Subscribed] = queue.Queue(queue_size)
        self.too_large = 0
        self.connected = False
        self._closing = False
        self._subscribed = threading.Event()
        self._refused = ""
        self._subscription_mid: int | None = None
        self._publish_refused: dict[int, int] = {}
        self._pending: list[Any] = []  # paho's MQTTMessageInfo of publish_later
        # unique, so that two operators (or two watchers) never take over each other's session
        client_id = f"pos-fleet-{purpose}-{uuid.uuid4().hex[:8]}"
        try:
            self._client = mqtt.new_client(client_id, settings, broker)
        except OSError as exc:  # a CA or client certificate that cannot be read
            raise BrokerError(f"broker {broker}: {exc}") from None
        self._client.suppress_exceptions = True  # a bug in a callback is logged, not fatal
        self._client.reconnect_delay_set(*RECONNECT)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        try:
            mqtt.connect(self._client, broker, KEEPALIVE)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS, a bad address
            raise BrokerError(f"broker {broker}: {exc or type(exc).__name__}") from None
        self._client.loop_start()

    def wait_subscribed(self, timeout: float) -> None:
        """Until the broker granted the subscription; BrokerError when it refused the connection
        or the subscription, or did not answer within ``timeout`` seconds."""
        if not self._subscribed.wait(timeout):
            raise BrokerError(f"broker {self.broker}: no answer within {timeout:.0f} s")
        if self._refused:
            raise BrokerError(f"broker {self.broker}: {self._refused}")

    def get(self, timeout: float) -> Received | Subscribed | None:
        """The next message, or None after ``timeout`` seconds without one."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def gather(self, quiet: float, deadline: float) -> list[Received]:
        """The messages that come until none has for ``quiet`` seconds (the retained ones
        come at once after the subscription), ``deadline`` seconds at most."""
        gathered: list[Received] = []
        end = time.monotonic() + deadline
        while (left := end - time.monotonic()) > 0:
            item = self.get(min(quiet, left))
            if item is None:
                break
            if isinstance(item, Received):
                gathered.append(item)
        return gathered

    def publish(self, topic: str, payload: bytes, retain: bool, timeout: float) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement; BrokerError when it did
        not come within ``timeout`` seconds or refused the message (MQTT 5: not authorised)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:  # paho: not queued, the connection is gone
            raise BrokerError(f"broker {self.broker}: {topic} not published: {exc}") from None
        if not info.is_published():
            raise BrokerError(f"broker {self.broker}: {topic} not acknowledged in {timeout} s")
        refused = self._publish_refused.pop(info.mid, None)
        if refused is not None:
            raise BrokerError(f"broker {self.broker}: {topic} refused (reason code {refused})")

    def publish_later(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish at QoS 1 without waiting: paho sends it again after a reconnection, and
        :meth:`close` waits for it."""
        self._pending = [info for info in self._pending if not info.is_published()]
        self._pending.append(self._client.publish(topic, payload, qos=1, retain=retain))

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect, once what :meth:`publish_later` sent is acknowledged (``timeout``
        seconds at most: a broker that is gone gets no longer)."""
        end = time.monotonic() + timeout
        for info in self._pending:
            while self.connected and not info.is_published() and time.monotonic() < end:
                time.sleep(0.05)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    # paho's callbacks, in its thread; *rest: paho 2 and MQTT 5 add reason codes and properties

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, *rest: Any) -> None:
        if _code(reason) != 0:
            self._refused = f"connection refused: {reason}"
            self._subscribed.set()  # wait_subscribed says why at once
            return
        self.connected = True
        result, self._subscription_mid = client.subscribe([(topic, 1) for topic in self.topics])
        if result != 0:
            log.warning("broker %s: subscribing failed (%s)", self.broker, result)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, granted: Any, *rest: Any) -> None:
        if mid != self._subscription_mid:
            return
        codes = [_code(code) for code in granted]
        refused = [topic for topic, code in zip(self.topics, codes, strict=False) if code >= 0x80]
        if refused:
            self._refused = f"subscription refused: {', '.join(refused)}"
            log.warning("broker %s: %s", self.broker, self._refused)
        else:
            self._refused = ""
            self.inbox.put(Subscribed())
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload = message.payload
        if len(payload) > MAX_PAYLOAD:  # counted, never held: memory stays bounded
            self.too_large += 1
            return
        self.inbox.put(Received(message.topic, payload, bool(message.retain)))

    def _on_disconnect(self, client: Any, userdata: Any, *rest: Any) -> None:
        if self.connected and not self._closing:
            log.warning("broker %s: connection lost; reconnecting", self.broker)
        self.connected = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        reason = rest[0] if rest else 0
        if _code(reason) >= 0x80:
            self._publish_refused[mid] = _code(reason)
