"""An agent wired to the host simulator over real TCP, the module simulator on a real pty, and the
payment app on a real Unix socket. Everything runs in the test's event loop except the module
simulator's thread."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config, build
from agent.keys.family import rules_of
from agent.service.assembly import Agent
from agent.sim.host import AcquirerHost
from agent.sim.host_server import HostServer
from agent.sim.module_port import SimulatedModulePort
from agent.sim.site import MID, TID, Site, simulated_site
from agent.wire import field59
from agent.wire.builders import Card
from agent.wire.frame import with_length
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.pin import pin_pan
from drivers.framing import Frame, FrameParser
from drivers.module import Command, KeyFamily, decode_key_status, encode_pin_request
from tests.processes import free_port

__all__ = [
    "CARD",
    "MID",
    "PAN",
    "TID",
    "Rig",
    "app_purchase",
    "exchange",
    "gateway_rig",
    "module_command",
    "pin_purchase",
    "reversal_of",
    "send_and_leave",
    "void_of",
]
PAN = "6217001234567890123"
CARD = Card(pan=PAN, expiry="2812", track2=PAN + "=28121010000000000")


@dataclass
class Rig:
    site: Site
    agent: Agent
    socket: Path
    config: Config

    @property
    def module_socket(self) -> Path:
        return self.socket.with_name("module.sock")

    @property
    def host(self) -> AcquirerHost:
        return self.site.host

    @property
    def server(self) -> HostServer:
        return self.site.server

    @property
    def module_port(self) -> SimulatedModulePort:
        return self.site.module_port

    def queue_reversal(self, stan: str, amount_fen: int, tid: str = TID) -> None:
        """A reversal the journal holds for a purchase with this wire STAN and amount, as if it
        had timed out (the host answers 25 when it never saw such a purchase); ``tid``: the
        terminal it was made as (another one: before a re-provisioning)."""
        journal = self.agent.journal
        original = app_purchase(amount_fen)
        original.fields.update({11: stan, 41: tid, 42: self.config.terminal.mid})
        original.fields[60] = f"22{journal.batch:06d}000"
        transaction = journal.begin(original, financial=True)
        journal.finish(transaction, "timed-out", detail="test", reversal_reason="98")

    async def serve_tcp(self) -> int:
        """The payment app's socket on a TCP port of 127.0.0.1 too (``gateway.tcp_port``);
        returns the port."""
        port = free_port()
        await self.agent.app_socket.serve(None, port)
        return port

    def put_tms(self, **changes: object) -> None:
        """What the TMS holds for this terminal's module, changed as given."""
        self.site.provision_in_tms(list(map(str, self.agent.config.endpoints)), **changes)


_APP_STANS = itertools.count(901)


def app_purchase(amount_fen: int, app_stan: int | None = None) -> Message:
    """What a payment app sends in wrap mode: no TID/MID, no MAC, its own STAN (a new one for
    each sale unless given: the same STAN, MTI, processing code and amount again is a repetition,
    which gets the first answer again)."""
    if app_stan is None:
        app_stan = next(_APP_STANS) % 999_999 + 1
    return Message(
        "0200",
        {
            2: CARD.pan, 3: "000000", 4: f"{amount_fen:012d}", 11: f"{app_stan:06d}",
            14: CARD.expiry, 22: "022", 25: "00", 35: CARD.track2, 49: "156",
            60: "22000000",  # 60.1 purchase; the agent fills the batch
        },
    )  # fmt: skip


def void_of(
    app_stan: int, amount_fen: int, new_stan: int | None = None, batch: str = "000000"
) -> Message:
    """A void naming the purchase by the app's receipt number (61.2) in ``batch`` (61.1;
    ``000000``: the app names none, the current one is meant)."""
    void = app_purchase(amount_fen, app_stan=new_stan)
    void.fields.update({3: "200000", 60: "23000000", 61: f"{batch}{app_stan:06d}1201"})
    return void


def reversal_of(purchase: Message) -> Message:
    """The app's own 0400 for its purchase: the same STAN, amount and codes."""
    fields = {n: purchase.fields[n] for n in (2, 3, 4, 11, 22, 25, 49, 60)}
    fields[39] = "06"
    return Message("0400", fields)


async def send_and_leave(socket: Path, message: Message) -> None:
    """The payment app sends ``message`` and closes its end at once: it cannot take the
    answer."""
    _, writer = await asyncio.open_unix_connection(str(socket))
    writer.write(with_length(encode_message(message)))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def module_command(socket: Path, command: int, data: bytes, seq: int = 0x5A) -> bytes:
    """One command through the agent's module socket, as the payment app sends it; returns the
    response DATA (status first)."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(Frame(seq, command, data).encode())
        await writer.drain()
        head = await reader.readexactly(3)
        rest = await reader.readexactly(int.from_bytes(head[1:], "big") + 3)
        events = FrameParser().feed(head + rest)
        assert len(events) == 1 and isinstance(events[0], Frame), events
        assert (events[0].seq, events[0].cmd) == (seq, command | 0x80)
        return events[0].data
    finally:
        writer.close()


async def pin_purchase(rig: Rig, amount_fen: int, app_stan: int | None = None) -> Message:
    """A purchase with a PIN the cardholder typed on the module's keypad: the app asks the
    module (KEY_STATUS) for the key slot's family and gets the PIN block through the module
    socket, as a real payment app does, laid out as the family wants (DESIGN.md section 4):
    DES a format 0 block in 52; SM4 the 16-byte block in 59 usage A1 with 52 = 8 zero bytes."""
    slot = rig.config.module.key_slot
    status = await module_command(rig.module_socket, Command.KEY_STATUS, bytes([slot]))
    family = rules_of(decode_key_status(slot, status[1:]).family)
    request = encode_pin_request(slot, pin_pan(PAN), 30, format=family.pin_format)
    answer = await module_command(rig.module_socket, Command.PIN_BLOCK, request)
    assert answer[0] == 0, f"PIN_BLOCK status {answer[0]:02X}"
    message = app_purchase(amount_fen, app_stan)
    # 22: PIN entered; 26: up to 12 digits; 53: the family's PIN format and algorithm
    message.fields.update({22: "021", 26: "12", 52: answer[1:], 53: family.field_53_pin})
    if family.family is KeyFamily.SM4:
        message.fields[52] = bytes(8)
        message.fields[59] = field59.with_usage(None, field59.SM4_PIN_BLOCK, answer[1:])
    message.fields = dict(sorted(message.fields.items()))
    return message


async def exchange(socket: Path, message: Message | bytes) -> Message:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        raw = message if isinstance(message, bytes) else encode_message(message)
        writer.write(with_length(raw))
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        return decode_message(await reader.readexactly(length))
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def gateway_rig(
    tmp_path: Path,
    *,
    backup: bool = False,
    primary_down: bool = False,
    response_timeout: float = 1.0,
    mode: str = "wrap",
    sign_in: bool = True,
    journal_dir: Path | None = None,
    host_options: dict[str, object] | None = None,
    server_tls: ssl.SSLContext | None = None,
    sections: dict[str, dict[str, object]] | None = None,
):
    """``sections`` adds to or replaces parts of the configuration, by section."""
    async with simulated_site(tmp_path, server_tls) as site:
        dead_port = None
        if primary_down:
            probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            dead_port = probe.sockets[0].getsockname()[1]
            probe.close()
            await probe.wait_closed()
        raw = site.agent_settings(tmp_path)
        raw["host"] = {
            "primary": f"127.0.0.1:{dead_port}" if dead_port else site.host_address,
            "backup": site.host_address if backup or primary_down else "",
            "response_timeout": response_timeout,
            "connect_timeout": 1.0,
            **(host_options or {}),
        }
        raw["gateway"]["mode"] = mode
        raw["journal"]["path"] = str((journal_dir or tmp_path) / "journal.sqlite3")
        raw["tms"]["timeout"] = 2
        for section, values in (sections or {}).items():
            raw[section] = {**raw.get(section, {}), **values}
        config = build(raw, "test", env={})
        agent = Agent(config)
        await agent.app_socket.serve(tmp_path / "agent.sock")
        await agent.module_proxy.serve(tmp_path / "module.sock")
        try:
            if sign_in:
                await agent.sender.sign_in()
            yield Rig(site, agent, tmp_path / "agent.sock", config)
        finally:
            await agent.close()
