"""One way to make a paho-mqtt client for the broker of ``[telemetry]`` (DESIGN.md section 14),
shared by the terminal's publisher and the operator's ``agent fleet`` commands: MQTT 5 (or 3.1.1
where ``telemetry.protocol`` says so), TLS with the configured CA and optional client certificate,
a username and a password read from ``telemetry.password_file``. paho 1.6 (Debian 12) and 2.x
are both served."""

from __future__ import annotations

import importlib
import sys
import types
import urllib.parse
from pathlib import Path
from typing import Any

from agent.config import TelemetryConfig

# paho's client imports these at its top for what the agent never uses: urllib.request (with
# http.client, email, tempfile...) only to find a proxy when PySocks is installed, uuid for a
# client id the agent always gives, hashlib for WebSockets. Together they are 3.5 MB of RSS,
# most of what telemetry cost; standing in for them until something really uses one keeps
# telemetry under 1 MB on a 256 MB terminal (DESIGN.md section 14).
PAHO_UNUSED = ("urllib.request", "uuid", "hashlib")


class _Deferred(types.ModuleType):
    """Stands in for module ``name`` in ``sys.modules`` until an attribute is asked for; then
    the real module is imported (replacing the stand-in everywhere the import system binds
    it) and the attribute comes from it. ``__spec__`` is set, so an ``import`` statement
    alone does not trigger it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__spec__ = None

    def __getattr__(self, attribute: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)


def _defer(name: str) -> None:
    if name in sys.modules:
        return  # in use already: nothing to save
    stand_in = _Deferred(name)
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:  # ``import a.b`` binds ``a``: its attribute ``b`` must be there as well
        setattr(importlib.import_module(parent), child, stand_in)


for _name in PAHO_UNUSED:
    _defer(_name)

import paho.mqtt.client as mqtt  # noqa: E402  (after the lazy modules above)

MQTT5 = "5"


class BrokerSettingsError(Exception):
    """The settings cannot make a connection (an unreadable password file); the text says why."""


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, TLS) of ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]``."""
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "", parts.port or (8883 if tls else 1883), tls


def is_v5(settings: TelemetryConfig) -> bool:
    return settings.protocol == MQTT5


def pinned_tls(settings: TelemetryConfig, broker: str) -> bool:
    """TLS to a broker whose certificate must chain to a CA of our own (not the system's)."""
    return broker_address(broker)[2] and bool(settings.ca_file)


def new_client(client_id: str, settings: TelemetryConfig, broker: str) -> mqtt.Client:
    """A client for ``broker`` with the protocol, TLS and credentials of ``settings``, not yet
    connected (under 3.1.1 with a clean session; MQTT 5 says so in :func:`connect`)."""
    protocol = mqtt.MQTTv5 if is_v5(settings) else mqtt.MQTTv311
    # paho 2 asks which callback signatures the caller expects; 1.6 has one
    version = getattr(mqtt, "CallbackAPIVersion", None)
    session: dict[str, Any] = {} if is_v5(settings) else {"clean_session": True}
    if version is not None:
        client = mqtt.Client(version.VERSION2, client_id=client_id, protocol=protocol, **session)
    else:
        client = mqtt.Client(client_id=client_id, protocol=protocol, **session)
    if broker_address(broker)[2]:
        client.tls_set(
            ca_certs=settings.ca_file or None,
            certfile=settings.cert_file or None,
            keyfile=settings.key_file or None,
        )
    if settings.username:
        client.username_pw_set(settings.username, read_password(settings.password_file))
    return client


def read_password(path: str) -> str | None:
    """The first line of ``path`` (None when no file is configured)."""
    if not path:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerSettingsError(f"telemetry.password_file {path}: {exc}") from None
    return lines[0] if lines else ""


def connect(client: mqtt.Client, broker: str, keepalive: int, session: int = 0) -> None:
    """Start connecting; raises OSError or ValueError as paho does. ``session`` (MQTT 5
    only): seconds the broker keeps the session after the connection ends, and resumes it if
    the client is back within them: the will waits as long (a will is published no later
    than the session ends), and what arrives for the client meanwhile (a command) is kept.
    0: a clean start, nothing kept."""
    host, port, _ = broker_address(broker)
    # paho 2 names it protocol; 1.6 (Debian 12) keeps it in _protocol
    if getattr(client, "protocol", getattr(client, "_protocol", None)) == mqtt.MQTTv5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = None
        if session:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session
        client.connect(host, port, keepalive=keepalive, clean_start=not session,
                       properties=properties)  # fmt: skip
    else:
        client.connect(host, port, keepalive=keepalive)


def will_properties(delay: int) -> Any:
    """The will's properties under MQTT 5: published ``delay`` seconds after a lost connection
    (a reconnect within them cancels it)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.WILLMESSAGE)
    properties.WillDelayInterval = delay
    return properties
