"""The agent and its simulators as real processes, for reliability tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from agent.wire.message import Message, decode_message, encode_message

if TYPE_CHECKING:
    from tests.tls_certs import ServerFiles

AGENT = str(Path(sys.executable).with_name("agent"))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise TimeoutError(f"waited {timeout} s for {what}")


class HostProcess:
    def __init__(
        self, workdir: Path, listen: str = "127.0.0.1:0", extra: list[str] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            [AGENT, "sim", "host", "--listen", listen, "--registry",
             str(workdir / "registry.json"), *(extra or [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        addresses = json.loads(self.process.stdout.readline())
        self.listen, self.admin = addresses["listen"], addresses["admin"]

    def state(self) -> dict:
        with urllib.request.urlopen(self.admin + "/state", timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict | None = None) -> None:
        request = urllib.request.Request(
            self.admin + path, data=json.dumps(body or {}).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


class ModuleProcess:
    def __init__(self, workdir: Path, extra: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [AGENT, "sim", "module", "--pty", "--link", str(workdir / "module"), "--state",
             str(workdir / "module.json"), *(extra or [])],
            stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.path = self.process.stdout.readline().strip()

    def command(self, line: str) -> str:
        """A console command (``noise 0.05``, ``unplug``...); returns the simulator's answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
        self.process.stdin.close()


def write_config(workdir: Path, host: HostProcess, module: ModuleProcess, **host_options) -> Path:
    options = {"response_timeout": 2, "connect_timeout": 1, **host_options}
    host_lines = "\n".join(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}"
                           for key, value in options.items())  # fmt: skip
    config = workdir / "agent.toml"
    config.write_text(
        f"""
[terminal]
tid = "10000001"
mid = "898100012340001"

[host]
primary = "{host.listen}"
{host_lines}

[module]
url = "{module.path}"
socket = "{workdir / "module.sock"}"

[gateway]
socket = "{workdir / "agent.sock"}"

[journal]
path = "{workdir / "journal.sqlite3"}"

[control]
socket = "{workdir / "control.sock"}"

[hooks]
directory = "{workdir / "hooks.d"}"
"""
    )
    return config


def downloaded(workdir: Path) -> None:
    """The terminal parameters and CA keys a host's downloads left beside the journal of
    :func:`write_config`'s configuration: a terminal that has its session downloads."""
    from agent.session.store import ParameterStore

    store = ParameterStore(workdir / "parameters.json")
    store.replace("terminal", {"values": {"merchant_name": "测试商户"}, "tags": {}})
    store.replace("ca_keys", {"keys": []})


def pay(socket_path: Path, amount_fen: int = 1000, app_stan: int | None = None) -> Message:
    """One purchase as the payment app sends it (wrap mode), on a connection of its own, with
    a new app STAN unless one is given."""
    from tests.integration.gateway_rig import app_purchase

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(socket_path))
        data = encode_message(app_purchase(amount_fen, app_stan))
        sock.sendall(len(data).to_bytes(2, "big") + data)
        stream = sock.makefile("rb")
        length = int.from_bytes(stream.read(2), "big")
        return decode_message(stream.read(length))


def control_ready(path: Path) -> bool:
    """Whether the control socket at ``path`` answers: its file appears at bind(), a moment
    before the agent listens on it, and a connect in between is refused."""
    try:
        control(path, b'{"cmd": "status"}')
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    return True


def control(path: Path, line: bytes) -> dict:
    """One request on the agent's control socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(line + b"\n")
        return json.loads(sock.makefile("rb").readline())


class AgentProcess:
    def __init__(
        self, config: Path, socket_path: Path, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.socket_path = socket_path
        self._log = open(log, "ab")  # noqa: SIM115 - kept open for the life of the process
        self.process = subprocess.Popen(
            [AGENT, "run", "--config", str(config)],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"agent exited with {self.process.returncode}")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(self.socket_path))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def wait_ready(self, timeout: float = 15) -> None:
        wait_for(self.ready, timeout, "the agent's payment socket")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=40)
        self._log.close()
        return code


MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's mosquitto; .ci/run installs it
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"  # its password file tool


class MosquittoProcess:
    """A real Mosquitto broker on a free loopback port, with persistence in ``workdir`` so that
    retained messages and a subscriber's session survive :meth:`stop` and :meth:`start`."""

    def __init__(
        self,
        workdir: Path,
        tls: ServerFiles | None = None,
        users: dict[str, str] | None = None,
        client_certificate: bool = True,
        extra_lines: list[str] | None = None,
    ) -> None:
        """``tls``: an mqtts listener with these files, a client certificate required unless
        ``client_certificate`` is False; ``users``: name -> password, and no anonymous
        client; ``extra_lines``: more of mosquitto.conf, after the listener's (for it: e.g.
        ``max_connections -1``)."""
        if not os.access(MOSQUITTO, os.X_OK):
            raise RuntimeError(f"{MOSQUITTO} missing: apt-get install mosquitto (.ci/run does)")
        self.port = free_port()
        self.url = f"{'mqtts://localhost' if tls else 'mqtt://127.0.0.1'}:{self.port}"
        store = workdir / "mosquitto"
        store.mkdir()
        self.config = store / "mosquitto.conf"
        anonymous = "false" if users else "true"
        lines = [
            f"listener {self.port} 127.0.0.1", f"allow_anonymous {anonymous}", "persistence true",
            f"persistence_location {store}/", f"log_dest file {store}/mosquitto.log",
        ]  # fmt: skip
        if os.geteuid() == 0:  # else, started by root, it becomes user mosquitto: no way into
            lines.append("user root")  # the test's private temporary folders
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}",
                      f"require_certificate {str(client_certificate).lower()}"]  # fmt: skip
        if users:
            passwords = store / "passwords"
            for n, (name, password) in enumerate(users.items()):
                create = ["-c"] if n == 0 else []
                subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(passwords), name, password],
                               check=True, capture_output=True)  # fmt: skip
            lines.append(f"password_file {passwords}")
        lines += extra_lines or []
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._listening, 10, "mosquitto to listen")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # it saves its persistence file on the way out
            self.process.wait(timeout=10)
        self.process = None


class Subscriber:
    """A fleet operator's client: a persistent session (messages published while it or the
    broker was away are kept for it), QoS 1, every message kept in arrival order."""

    def __init__(self, broker: MosquittoProcess, topic: str, client_id: str = "fleet") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict, bool]] = []  # topic, payload, retained
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_message = self._received
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _received(self, client, userdata, message) -> None:
        self.messages.append((message.topic, json.loads(message.payload), bool(message.retain)))

    def of(self, suffix: str) -> list[dict]:
        return [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retain(
    broker: MosquittoProcess, topic: str, payload: bytes, client_id: str = "watcher"
) -> None:
    """What the fleet's watcher does: a retained message on ``topic`` (empty: deleted), from a
    client ``client_id`` (the terminal's own takes its connection away)."""
    import paho.mqtt.client as mqtt

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    try:
        watcher.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
