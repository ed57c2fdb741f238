"""Re-provisioning: where a terminal's TID, MID and hosts come from when its configuration is wrong
or missing, and how the answer is kept.

Sources, in order: the TMS (asked by the card module's serial number), then the vendor's
``provision`` hook. What they say is written to ``provisioning.json`` in the state directory and
laid over the configuration file at every start: the TMS, not a hand-edited file, is the authority
on a terminal's registration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import damaged
from agent.config import Config, ConfigError, parse_value

log = logging.getLogger(__name__)


class ProvisioningError(Exception):
    """No usable provisioning could be had; the text says from where and why."""


class ProvisioningDamaged(ProvisioningError):
    """The saved provisioning file is there but is not a valid record (cut off, garbage)."""


@dataclass(frozen=True)
class Provisioning:
    """What a source says the terminal is: TID, MID, hosts and the rest it may set."""

    tid: str
    mid: str
    hosts: tuple[str, ...] = ()  # primary first, then backup
    tpdu_destination: str | None = None
    tpdu_source: str | None = None
    key_slot: int | None = None
    tusn: str | None = None  # the hardware serial the acquirer reported for it (DESIGN.md 17)
    source: str = ""  # where it came from: "TMS http://...", "hook ...", "file ..."

    @classmethod
    def from_record(cls, record: Any, source: str) -> Provisioning:
        """Validate a record (the TMS's JSON, a hook's output, the saved file) with the same rules
        as the configuration file; errors name the source and the field."""
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise ProvisioningError(f"{source}: expected a JSON object, got {kind}")
        hosts = record.get("hosts")
        if hosts is None:  # a hook may name them like the configuration does
            hosts = [h for h in (record.get("primary"), record.get("backup")) if h]
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ProvisioningError(f"{source}: hosts must be a list of HOST:PORT strings")
        if len(hosts) > 2:
            raise ProvisioningError(f"{source}: at most two hosts (primary, backup)")
        provisioning = cls(
            tid=record.get("tid", ""),
            mid=record.get("mid", ""),
            hosts=tuple(hosts),
            tpdu_destination=record.get("tpdu_destination"),
            tpdu_source=record.get("tpdu_source"),
            key_slot=record.get("key_slot"),
            tusn=record.get("tusn"),
            source=source,
        )
        if provisioning.tusn is not None and not (
            isinstance(provisioning.tusn, str)
            and 0 < len(provisioning.tusn) <= 50
            and provisioning.tusn.isascii()
            and provisioning.tusn.isprintable()
        ):
            raise ProvisioningError(f"{source}: tusn must be 1 to 50 printable ASCII characters")
        if not provisioning.tid or not provisioning.mid:
            raise ProvisioningError(f"{source}: tid and mid are required")
        try:
            provisioning.apply(Config())
        except ConfigError as exc:
            raise ProvisioningError(str(exc)) from None
        return provisioning

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["hosts"] = list(self.hosts)
        return {key: value for key, value in record.items() if value is not None}

    def apply(self, config: Config) -> Config:
        """``config`` with this provisioning laid over it, validated like the file."""

        def value(section: str, key: str, raw: Any) -> Any:
            return parse_value(section, key, raw, self.source or "provisioning")

        host = config.host
        if self.hosts:
            backup = self.hosts[1] if len(self.hosts) > 1 else ""
            host = dataclasses.replace(
                host,
                primary=value("host", "primary", self.hosts[0]),
                backup=value("host", "backup", backup),
            )
        wire = {"tpdu_destination": self.tpdu_destination, "tpdu_source": self.tpdu_source}
        module = config.module
        if self.key_slot is not None:
            slot = value("module", "key_slot", self.key_slot)
            module = dataclasses.replace(module, key_slot=slot)
        return dataclasses.replace(
            config,
            terminal=dataclasses.replace(
                config.terminal,
                tid=value("terminal", "tid", self.tid),
                mid=value("terminal", "mid", self.mid),
            ),
            host=host,
            wire=dataclasses.replace(
                config.wire,
                **{k: value("wire", k, v) for k, v in wire.items() if v is not None},
            ),
            module=module,
        )


def load_saved(path: Path) -> Provisioning | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisioningError(f"{path}: cannot be read: {exc}") from None
    try:
        record = json.loads(text)
        saved = Provisioning.from_record(record, f"file {path}")
    except ValueError as exc:
        raise ProvisioningDamaged(f"{path}: not valid JSON: {exc}") from None
    except ProvisioningError as exc:
        raise ProvisioningDamaged(str(exc)) from None
    return dataclasses.replace(saved, source=record.get("source", saved.source))


def save(path: Path, provisioning: Provisioning) -> None:
    """Atomically, written by the service only; its group bit lets the technicians' group read
    it through the state directory's ACL (packaging/systemd/pos-agent.tmpfiles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(provisioning.to_record(), out, indent=2, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def effective(config: Config, path: Path, *, service: bool = False) -> Config:
    """The configuration the agent runs with: the file, then what re-provisioning saved. A
    saved file that cannot be used is never a reason to stop (DESIGN.md section 8): the
    configuration file alone is used; the service (``service``) moves a damaged one aside,
    a technician's command only says so."""
    try:
        saved = load_saved(path)
    except ProvisioningError as exc:
        if service and isinstance(exc, ProvisioningDamaged):
            try:
                aside = damaged.set_aside(path)
                log.error("%s: moved aside to %s; running on the configuration file", exc, aside)
            except OSError as move:
                log.error("%s (not moved aside: %s); running on the configuration file", exc, move)
        else:
            log.warning("%s; running on the configuration file", exc)
        return config
    try:
        return saved.apply(config) if saved else config
    except ConfigError as exc:
        log.error("%s; running on the configuration file", exc)
        return config


async def fetch_from_tms(url: str, serial: str, timeout: float) -> Provisioning:
    """Ask the TMS for the terminal whose card module has ``serial``."""
    record = await tms_get(url, "terminals", serial, timeout)
    return Provisioning.from_record(record, f"TMS {url}")


async def tms_get(url: str, collection: str, serial: str, timeout: float) -> Any:
    """``GET <url>/<collection>/<serial>``: the TMS's JSON answer about the module with
    ``serial`` (its provisioning, its master key). :class:`ProvisioningError` says why not."""
    import urllib.error  # only when the TMS is asked: urllib pulls in http and email
    import urllib.parse
    import urllib.request

    address = f"{url}/{collection}/{urllib.parse.quote(serial.strip(), safe='')}"

    def get() -> Any:
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response:
                return json.loads(response.read(65536))
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's connection open until collected otherwise
            if exc.code == 404:
                raise ProvisioningError(
                    f"TMS {url} does not know module serial {serial.strip()}"
                ) from None
            raise ProvisioningError(f"TMS {url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProvisioningError(f"TMS {url} cannot be reached: {reason}") from None
        except ValueError as exc:
            raise ProvisioningError(f"TMS {url} sent something that is not JSON: {exc}") from None

    return await asyncio.to_thread(get)
