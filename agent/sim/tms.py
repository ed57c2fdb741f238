"""A terminal management system (TMS) simulator: HTTP JSON on 127.0.0.1 that returns a terminal's
provisioning by its card module's serial number. Re-provisioning asks it.

    GET  /terminals/<serial>   {"tid", "mid", "hosts": ["HOST:PORT", ...], "tpdu_destination",
                                "tpdu_source", "key_slot", "tusn" (where one is held)}; 404 for
                                an unknown serial
    PUT  /terminals/<serial>   set a terminal's provisioning (the same object)
    GET  /tmk/<serial>         {"tmk": hex, "kcv": hex}: the master key under the module's
                               transport key and its KCV (DESIGN.md section 18), as a test set
                               it (:meth:`Tms.put_tmk`, kept in memory only); 404 for none

The data lives in a JSON file keyed by serial.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from agent.sim.jsonhttp import JsonHandler, serve_in_thread

FIELDS = {"tid": 8, "mid": 15}


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """A provisioning record with the right shape, or ``ValueError`` naming the field."""
    for name, length in FIELDS.items():
        value = record.get(name)
        if not isinstance(value, str) or len(value) != length:
            raise ValueError(f"{name} must be a string of {length} characters")
    hosts = record.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ValueError("hosts must be a non-empty list of HOST:PORT strings")
    kept = {
        "tid": record["tid"],
        "mid": record["mid"],
        "hosts": hosts,
        "tpdu_destination": str(record.get("tpdu_destination", "0003")),
        "tpdu_source": str(record.get("tpdu_source", "0000")),
        "key_slot": int(record.get("key_slot", 0)),
    }
    tusn = record.get("tusn")
    if tusn is not None:  # the TUSN the acquirer reported for it (DESIGN.md section 17)
        if not (isinstance(tusn, str) and 0 < len(tusn) <= 50 and tusn.isascii()
                and tusn.isprintable()):  # fmt: skip
            raise ValueError("tusn must be a string of 1 to 50 printable ASCII characters")
        kept["tusn"] = tusn
    return kept


class Tms:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        self.tmks: dict[str, dict[str, str]] = {}  # serial -> {"tmk": hex, "kcv": hex}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                self.records = {serial: validate(r) for serial, r in raw.items()}
            except (OSError, ValueError, AttributeError) as exc:
                raise ValueError(f"TMS data {path} is unreadable: {exc}") from None

    def put(self, serial: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.records[serial] = validate(record)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.records, indent=2))
            os.replace(temporary, self.path)

    def get(self, serial: str) -> dict[str, Any] | None:
        with self.lock:
            return self.records.get(serial)

    def put_tmk(self, serial: str, record: dict[str, str]) -> None:
        """What ``GET /tmk/<serial>`` answers (served as given: a test may make it wrong)."""
        with self.lock:
            self.tmks[serial] = dict(record)

    def get_tmk(self, serial: str) -> dict[str, str] | None:
        with self.lock:
            return self.tmks.get(serial)


def tms_handler(tms: Tms) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def _serial(self, collection: str = "terminals") -> str | None:
            parts = self.path.strip("/").split("/")
            return parts[1] if len(parts) == 2 and parts[0] == collection else None

        def do_GET(self) -> None:
            serial = self._serial()
            record: dict[str, Any] | None = tms.get(serial) if serial else None
            if serial is None and (serial := self._serial("tmk")) is not None:
                record = tms.get_tmk(serial)
            if serial is None:
                self.not_found()
            elif record is None:
                self.reply(404, {"error": f"unknown module serial {serial}"})
            else:
                self.reply(200, record)

        def do_PUT(self) -> None:
            serial = self._serial()
            if serial is None:
                self.not_found()
                return
            try:
                tms.put(serial, self.body())
            except ValueError as exc:
                self.reply(400, {"error": str(exc)})
                return
            self.reply(200, {"ok": True})

    return Handler


def main(data: Path, listen: tuple[str, int]) -> int:
    """``agent sim tms``: prints one JSON line with its URL, serves until SIGTERM/SIGINT."""
    host, port = listen
    httpd = serve_in_thread(tms_handler(Tms(data)), port, "tms", host)
    print(json.dumps({"url": f"http://{host}:{httpd.server_port}"}), flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    httpd.shutdown()
    return 0
