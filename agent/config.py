"""Configuration: one TOML file, validated at start, environment overrides.

Every error names the file, the key and what was expected. ``POS_AGENT_<SECTION>_<KEY>`` overrides
a key (``POS_AGENT_HOST_PRIMARY=10.0.0.5:5000``).
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.wire.profile import CUP, Profile, ProfileError, load_profile
from agent.wire.working_keys import LAYOUTS
from drivers.loading import module_driver

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/pos-agent/agent.toml")
# The sign-in schemes wire.key_scheme may name besides "auto" (006: SM4 keys, DESIGN.md 18)
KEY_SCHEMES = ("001", "003", "004", "006")
ENV_PREFIX = "POS_AGENT_"


class ConfigError(ValueError):
    """A configuration problem, naming where it is and what was expected."""


@dataclass(frozen=True)
class Endpoint:
    """A host's address, ``HOST:PORT`` as the configuration writes it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TerminalConfig:
    tid: str = ""
    mid: str = ""
    support_phone: str = ""

    def identity(self) -> dict[str, str]:
        """Who the terminal is, as hooks and the merchant's messages name it."""
        return {"tid": self.tid, "mid": self.mid, "support_phone": self.support_phone}


@dataclass(frozen=True)
class HostConfig:
    primary: Endpoint | None = None
    backup: Endpoint | None = None
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    idle_echo: float = 60.0  # seconds without traffic before an echo test; 0 turns it off
    failover_after: int = 2  # response timeouts in a row that mark an endpoint down
    tls: bool = False
    ca_file: str = ""
    server_name: str = ""


@dataclass(frozen=True)
class WireConfig:
    tpdu_destination: int = 0x0003
    tpdu_source: int = 0x0000
    header_category: int = 0x60  # 0x60 magnetic stripe application, 0x61 IC
    software_version: int = 0x31
    sub_version: str = "311303"
    # sign-in scheme (60.3): "auto" tries the key family's schemes in order and keeps the
    # first the host approves (DESIGN.md section 4); "001", "003", "004" or "006" is used alone
    key_scheme: str = "auto"
    # field 62 layout 1-8 of DESIGN.md section 4; 0: recognise it. A layout belongs to one
    # scheme: with key_scheme "auto", a layout set here makes its scheme the only one used.
    key_layout: int = 0
    # where an SM4 terminal's PIN block goes: "59" (usage A1, as the app sends it) or "62",
    # for acquirers that want it there (the agent moves A1's value; DESIGN.md section 4)
    sm_pin_field: str = "59"
    profile: Profile = CUP  # built-in, or the file ``wire.profile`` names laid over it


@dataclass(frozen=True)
class ModuleConfig:
    url: str = "/dev/ttyS1"
    baudrate: int = 115200
    key_slot: int = 0
    socket: str = ""  # the payment app's way to the module; default: $RUNTIME_DIRECTORY/module.sock
    pin_per_minute: int = 6  # PIN entries served to each user of the module socket a minute
    # "serial": the built-in driver of the serial protocol (DESIGN.md section 5); else the name of
    # an installed driver, an entry point of group pos_agent.modules
    driver: str = "serial"


@dataclass(frozen=True)
class GatewayConfig:
    socket: str = ""  # default: $RUNTIME_DIRECTORY/agent.sock
    tcp_port: int = 0  # 0: no TCP listener; otherwise 127.0.0.1:PORT
    mode: str = "wrap"  # or "pass-through"
    replay_window: float = 120.0  # seconds a repeated request gets the first answer again
    max_clients: int = 32  # payment app connections at once
    idle_timeout: float = 300.0  # seconds an app connection may stay idle
    # The CPU all of the agent's threads run on: "last" (the highest-numbered it may use),
    # a CPU number, or "any" (each thread where the kernel puts it). Its threads hand each
    # request to one another and run Python one at a time: on one CPU a hand-off is a switch,
    # across CPUs a wake-up of the other one
    cpu: str = "last"


@dataclass(frozen=True)
class JournalConfig:
    path: str = ""  # default: <state directory>/journal.sqlite3
    keep_days: float = 30.0  # rows of settled batches older than this are deleted
    max_mb: float = 64.0  # the journal stays under this (oldest settled rows first)


@dataclass(frozen=True)
class TmsConfig:
    url: str = ""  # e.g. http://tms.example:8080; empty: re-provision through the hook only
    timeout: float = 5.0


@dataclass(frozen=True)
class HooksConfig:
    directory: str = "/etc/pos-agent/hooks.d"
    timeout: float = 10.0


@dataclass(frozen=True)
class RecoveryConfig:
    attempts: int = 3  # retries of the original request after a 97
    deadline: float = 30.0  # seconds from the 97 to giving up
    probe_first: float = 10.0  # first pause of the sign-in probe while unregistered
    probe_max: float = 300.0
    # during a host-side incident the fleet announced: at most one sign-in per this many seconds
    incident_signin_every: float = 600.0


@dataclass(frozen=True)
class ReversalConfig:
    attempts: int = 3  # failed tries in a row before sales go on without waiting for it
    retry_max: float = 600.0  # longest pause between background tries (seconds; 10 minutes at most)
    # seconds after a 12/25 ("nothing to reverse") before the reversal is sent once more, in
    # case it overtook its original; 0: never
    recheck_after: float = 30.0


@dataclass(frozen=True)
class SessionConfig:
    repeat_after: float = 600.0  # seconds a satisfied header requirement is not acted on again
    attempts: int = 5  # tries of a failed download before the next request starts it over
    retry_first: float = 5.0  # back-off of those tries (seconds, exponential with jitter)
    retry_max: float = 600.0


@dataclass(frozen=True)
class RegistrationConfig:
    """DESIGN.md section 17: the terminal hardware serial number (TUSN) in field 59 usage A2."""

    tusn: str = "module"  # "module": the agent adds A2 where the app did not; "app"; "off"
    app_version: str = ""  # A2 sub-usage 05; empty: the agent's version, first 8 characters
    location: bool = False  # add A5 (from the location hook) to purchases and pre-authorisations
    location_max_age: float = 600.0  # seconds a location from the hook is used


@dataclass(frozen=True)
class ClockConfig:
    ntp_server: str = ""  # empty: no NTP comparison
    warn_after: float = 60.0  # seconds of offset
    fail_after: float = 300.0


@dataclass(frozen=True)
class ControlConfig:
    socket: str = ""  # default: $RUNTIME_DIRECTORY/control.sock


@dataclass(frozen=True)
class SelftestConfig:
    deadline: float = 8.0  # seconds a check may take
    interval: float = 300.0  # the daemon's periodic light check; 0: off


@dataclass(frozen=True)
class KeysConfig:
    """DESIGN.md section 18: the remote master-key download, a remedy where the acquirer offers
    one."""

    tmk_download: str = "off"  # "0800-401", "signin-tag00", "tms"; "off": a person must act
    tmk_download_every: float = 3600.0  # seconds: at most one try (failed or not) per this


@dataclass(frozen=True)
class TelemetryConfig:
    """DESIGN.md section 14: the fleet's view of this terminal (off while broker and textfile
    are both empty)."""

    broker: str = ""  # mqtt://HOST[:1883] or mqtts://HOST[:8883]
    ca_file: str = ""  # mqtts: the CA that signed the broker's certificate (else the system's)
    cert_file: str = ""  # a client certificate, when the broker asks for one
    key_file: str = ""
    topic_prefix: str = "pos"
    outbox_max: int = 10_000  # events kept while the broker is away; the oldest go first
    textfile: str = ""  # node_exporter textfile: the state as Prometheus metrics
    protocol: str = "5"  # MQTT 5, or "3.1.1" for a broker that speaks only that
    username: str = ""  # for brokers that authenticate by password (EMQX, hosted brokers)
    password_file: str = ""  # the password, first line of this file (never in the TOML)
    # operator commands (selftest, signin, provision, journal, incident): only over TLS with a
    # pinned CA (mqtts:// and ca_file), at most commands_per_minute
    commands: bool = False
    commands_per_minute: int = 6

    @property
    def enabled(self) -> bool:
        return bool(self.broker or self.textfile)


@dataclass(frozen=True)
class FleetConfig:
    """The operator side (``agent fleet watch``, DESIGN.md section 14)."""

    incident_min_terminals: int = 20  # 97s or unregistered terminals of one host that open one
    incident_window: float = 300.0  # seconds they must fall within; also closes a quiet one


@dataclass(frozen=True)
class Config:
    """The configuration: one frozen dataclass per section, and where it was read from."""

    terminal: TerminalConfig = field(default_factory=TerminalConfig)
    host: HostConfig = field(default_factory=HostConfig)
    wire: WireConfig = field(default_factory=WireConfig)
    module: ModuleConfig = field(default_factory=ModuleConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    tms: TmsConfig = field(default_factory=TmsConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    reversal: ReversalConfig = field(default_factory=ReversalConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    selftest: SelftestConfig = field(default_factory=SelftestConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    source: str = "defaults"

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for e in (self.host.primary, self.host.backup) if e is not None]


# ----------------------------------------------------------------------------------- parsing


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _number(value: Any) -> float:
    if isinstance(value, str):
        value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError("expected a number of 0 or more")
    return float(value)


def _seconds(value: Any) -> float:
    """A time the agent waits: more than 0 (0 would fail everything at once), at most a day."""
    number = _number(value)
    if not 0 < number <= 86_400:
        raise ValueError("expected seconds above 0, at most 86400")
    return number


REVERSAL_PAUSE_CAP = 600.0  # DESIGN.md section 8: the reversal back-off is capped at 10 minutes


def _reversal_pause(value: Any) -> float:
    """The longest pause between a reversal's background tries, at most 10 minutes: a longer
    one (valid in earlier releases) is taken as 600 with a warning, not refused, so that an
    upgraded terminal still starts."""
    number = _seconds(value)
    if number > REVERSAL_PAUSE_CAP:
        log.warning("reversal.retry_max = %g: the back-off is capped at %g s; %g is used",
                    number, REVERSAL_PAUSE_CAP, REVERSAL_PAUSE_CAP)  # fmt: skip
        return REVERSAL_PAUSE_CAP
    return number


def _positive(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError("expected a number above 0")
    return number


def _between(lowest: int, highest: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = _integer(value)
        if not lowest <= number <= highest:
            raise ValueError(f"expected a whole number from {lowest} to {highest}")
        return number

    return parse


def _integer(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a whole number of 0 or more")
    return value


def _cpu(value: Any) -> str:
    if value in ("last", "any"):
        return value
    try:
        return str(_integer(value))
    except ValueError:
        raise ValueError('expected "last", "any" or a CPU number (0 or more)') from None


def _flag(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def parse_endpoint(value: Any, listening: bool = False) -> Endpoint | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6); a listener may ask for port 0 (any free port)."""
    text = _text(value).strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    lowest = 0 if listening else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port from {lowest} to 65535")
    return Endpoint(host.strip("[]"), int(port))


def _nii(value: Any) -> int:
    text = _text(value) if isinstance(value, str) else f"{_integer(value):04X}"
    if len(text) != 4 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError('expected 4 hex digits, e.g. "0003"')
    return int(text, 16)


def _byte_hex(value: Any) -> int:
    text = _text(value)
    if len(text) != 2 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError('expected 2 hex digits, e.g. "31"')
    return int(text, 16)


def _digits(count: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        if len(text) != count or not text.isdigit() or not text.isascii():
            raise ValueError(f"expected {count} digits")
        return text

    return parse


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        if text not in options:
            raise ValueError(f"expected one of {', '.join(repr(o) for o in options)}")
        return text

    return parse


def _key_layout(value: Any) -> int:
    if value == "auto":
        return 0
    number = _integer(value) if not isinstance(value, str) or value.isdigit() else -1
    if number not in LAYOUTS:
        raise ValueError(f'expected "auto" or a field 62 layout from 1 to {len(LAYOUTS)}')
    return number


def _profile_path(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("expected the path of a wire profile (TOML); leave it out for CUP")
    return text


def _url(value: Any) -> str:
    text = _text(value).strip()
    if text and not (text.startswith(("http://", "https://")) and len(text) > 8):
        raise ValueError('expected an http:// or https:// URL, e.g. "http://tms.example:8080"')
    return text.rstrip("/")


def _broker(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        return ""
    url = urllib.parse.urlsplit(text)
    try:
        port = url.port
    except ValueError:  # not a number, or out of range
        port = 0
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname or port == 0 or url.path.strip("/"):
        raise ValueError('expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], e.g. '
                         '"mqtts://broker.example:8883"')  # fmt: skip
    return text


def _topic_prefix(value: Any) -> str:
    text = _text(value)
    if not text or any(c in text for c in "+#\0") or text.startswith("/") or text.endswith("/"):
        raise ValueError('expected a topic level such as "pos" (no +, #, or leading/trailing /)')
    return text


def _app_version(value: Any) -> str:
    text = _text(value)
    if len(text) > 8 or not text.isascii() or not text.isprintable():
        raise ValueError("expected at most 8 printable ASCII characters (field 59 A2 usage 05)")
    return text


def _tid(value: Any) -> str:
    text = _text(value)
    if text and (len(text) != 8 or not text.isascii() or not text.isprintable()):
        raise ValueError("expected 8 printable ASCII characters")
    return text


def _mid(value: Any) -> str:
    text = _text(value)
    if text and (len(text) != 15 or not text.isascii() or not text.isprintable()):
        raise ValueError("expected 15 printable ASCII characters")
    return text


PARSERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "terminal": {"tid": _tid, "mid": _mid, "support_phone": _text},
    "host": {
        "primary": parse_endpoint,
        "backup": parse_endpoint,
        "connect_timeout": _seconds,
        "response_timeout": _seconds,
        "idle_echo": _number,
        "failover_after": _between(0, 100),
        "tls": _flag,
        "ca_file": _text,
        "server_name": _text,
    },
    "wire": {
        "tpdu_destination": _nii,
        "tpdu_source": _nii,
        "header_category": _byte_hex,
        "software_version": _byte_hex,
        "sub_version": _digits(6),
        "key_scheme": _choice(*KEY_SCHEMES, "auto"),
        "key_layout": _key_layout,
        "sm_pin_field": _choice("59", "62"),
        "profile": _profile_path,
    },
    "module": {
        "url": _text,
        "baudrate": _between(50, 4_000_000),
        "key_slot": _between(0, 255),  # one byte on the serial line
        "socket": _text,
        "pin_per_minute": _between(1, 100_000),  # a benchmark's rig raises it
        "driver": module_driver,  # one not installed, or that does not load, is an error at start
    },
    "gateway": {
        "socket": _text,
        "tcp_port": _between(0, 65535),
        "max_clients": _between(1, 512),
        "idle_timeout": _seconds,
        "mode": _choice("wrap", "pass-through"),
        "replay_window": _number,
        "cpu": _cpu,
    },
    "journal": {"path": _text, "keep_days": _positive, "max_mb": _positive},
    "tms": {"url": _url, "timeout": _seconds},
    "hooks": {"directory": _text, "timeout": _seconds},
    "recovery": {
        "attempts": _between(0, 100),
        "deadline": _seconds,
        "probe_first": _seconds,
        "probe_max": _seconds,
        "incident_signin_every": _seconds,
    },
    "reversal": {
        "attempts": _between(1, 1000),
        "retry_max": _reversal_pause,
        "recheck_after": _number,
    },
    "session": {
        "repeat_after": _number,
        "attempts": _between(1, 100),
        "retry_first": _seconds,
        "retry_max": _seconds,
    },
    "registration": {
        "tusn": _choice("module", "app", "off"),
        "app_version": _app_version,
        "location": _flag,
        "location_max_age": _seconds,
    },
    "clock": {"ntp_server": _text, "warn_after": _number, "fail_after": _number},
    "control": {"socket": _text},
    "selftest": {"deadline": _seconds, "interval": _number},
    "keys": {
        "tmk_download": _choice("off", "0800-401", "signin-tag00", "tms"),
        "tmk_download_every": _seconds,
    },
    "telemetry": {
        "broker": _broker,
        "ca_file": _text,
        "cert_file": _text,
        "key_file": _text,
        "topic_prefix": _topic_prefix,
        "outbox_max": _between(1, 1_000_000),
        "textfile": _text,
        "protocol": _choice("5", "3.1.1"),
        "username": _text,
        "password_file": _text,
        "commands": _flag,
        "commands_per_minute": _between(1, 600),
    },
    "fleet": {"incident_min_terminals": _between(1, 10_000_000), "incident_window": _seconds},
}
SECTION_CLASSES: dict[str, type] = {
    "terminal": TerminalConfig,
    "host": HostConfig,
    "wire": WireConfig,
    "module": ModuleConfig,
    "gateway": GatewayConfig,
    "journal": JournalConfig,
    "tms": TmsConfig,
    "hooks": HooksConfig,
    "recovery": RecoveryConfig,
    "reversal": ReversalConfig,
    "session": SessionConfig,
    "registration": RegistrationConfig,
    "clock": ClockConfig,
    "control": ControlConfig,
    "selftest": SelftestConfig,
    "telemetry": TelemetryConfig,
    "keys": KeysConfig,
    "fleet": FleetConfig,
}


def parse_value(section: str, key: str, value: Any, source: str) -> Any:
    """One validated setting; a bad one is a :class:`ConfigError` naming source, key and value."""
    try:
        return PARSERS[section][key](value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {section}.{key} = {value!r}: {exc}") from None


def build(
    raw: Mapping[str, Any],
    source: str,
    env: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> Config:
    """Validate ``raw`` (parsed TOML) plus environment overrides into a :class:`Config`.
    Relative paths of files the configuration reads (the wire profile) start at ``base``."""
    env = os.environ if env is None else env
    sections: dict[str, Any] = {}
    for section, value in raw.items():
        if section not in PARSERS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; expected one of {', '.join(PARSERS)}"
            )
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
    for section, parsers in PARSERS.items():
        values = dict(raw.get(section, {}))
        for key in values:
            if key not in parsers:
                raise ConfigError(
                    f"{source}: unknown key {section}.{key}; expected one of {', '.join(parsers)}"
                )
        origins = dict.fromkeys(values, source)  # a bad value is blamed on where it came from
        for key in parsers:
            variable = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if variable in env:
                values[key] = env[variable]
                origins[key] = f"environment {variable}"
        parsed = {
            key: parse_value(section, key, value, origins[key]) for key, value in values.items()
        }
        if section == "wire":
            parsed = _wire_checked(parsed, source, base or Path.cwd())
        sections[section] = SECTION_CLASSES[section](**parsed)
    config = Config(**sections, source=source)
    if config.host.tls and config.host.ca_file and not Path(config.host.ca_file).is_file():
        raise ConfigError(f"{source}: host.ca_file = {config.host.ca_file!r}: no such file")
    return config


def _wire_checked(parsed: dict[str, Any], source: str, base: Path) -> dict[str, Any]:
    """The [wire] settings that depend on each other, and the profile file loaded. A layout
    fixes its scheme: with ``key_scheme = "auto"`` a configured layout makes its scheme the one
    used alone (negotiating another would get keys the layout cannot read)."""
    scheme = parsed.get("key_scheme", WireConfig.key_scheme)
    layout = parsed.get("key_layout", 0)
    if layout and scheme == "auto":
        scheme = LAYOUTS[layout].scheme
        if scheme not in KEY_SCHEMES:
            raise ConfigError(
                f"{source}: wire.key_layout = {layout}: {LAYOUTS[layout].describe()}: scheme "
                f"{scheme} is not offered yet; expected a layout of scheme {', '.join(KEY_SCHEMES)}"
            )
        parsed["key_scheme"] = scheme
    elif layout and LAYOUTS[layout].scheme != scheme:
        raise ConfigError(
            f"{source}: wire.key_layout = {layout}: {LAYOUTS[layout].describe()} does not fit "
            f"wire.key_scheme = {scheme!r} (key_scheme 'auto' takes the layout's scheme)"
        )
    if "profile" in parsed:
        try:
            parsed["profile"] = load_profile(base / parsed["profile"])
        except ProfileError as exc:
            raise ConfigError(f"{source}: wire.profile: {exc}") from None
    return parsed


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration. A missing default file gives the defaults (an
    unprovisioned terminal); a missing file named explicitly is an error."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such configuration file") from None
        return build({}, f"{path} (absent: defaults)", env, path.parent)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    # a relative path in the file is read from the file's own directory
    return build(raw, str(path), env, path.parent)
