"""The acquirer host simulator on the network: an asyncio TCP server with injected faults, and an
admin HTTP interface on 127.0.0.1 (``http.server`` in a thread).

Admin API (JSON):

    GET  /state                          terminals, sessions, ledger, counters, pending faults
    POST /terminals                      {"tid", "mid", "tmk"?, "family"?: "DES" | "SM4"}: register
                                         (active)
    POST /terminals/<tid>/cancel         cancel: 97 from now on
    POST /terminals/<tid>/activate       active again
    POST /terminals/<tid>/forget         drop its session: 97 until it signs in
    POST /terminals/<tid>/require-signin set header processing requirement 3 until it signs in
    POST /terminals/<tid>/require-download   processing requirement 6 on the next answer
    POST /terminals/<tid>/ask            {"requirement": 1-15}: that requirement on the next answer
    POST /terminals/<tid>/tusn           {"tusn": "...", "reported"?: true | false}: report the
                                         TUSN to CUP for the terminal (false: withdraw it); kept
                                         in the registry file
    POST /settings                       {"key_layout"?: 0-7, "batch"?: N, "check_batch"?: bool,
                                          "chain_downloads"?: bool,
                                          "download_fault"?: "" | "ca-sha1" | "tlv-overrun" |
                                          "list-never-ends" | "list-repeats",
                                          "parameter_table"?: "cup" |
                                          "huateng" | "aiaunionpay", "check_tusn"?: bool,
                                          "tusn_refusal"?: 2 letters or digits (not "00"),
                                          "tusn_key"?: 32 hex digits,
                                          "accepted_schemes"?: ["004", "006"]}
    POST /faults                         {"kind", "count"?: 1, "delay"?: 2.0, "mti"?}; kinds below
    POST /faults/clear
    POST /reload                         re-read the registry file

``check_tusn`` has every purchase and pre-authorisation checked for a right field 59 ``A2`` of a
reported TUSN, refused with ``tusn_refusal`` (97) otherwise; ``tusn_key`` is the SM4 key the
ciphertexts are verified with (the module simulator's test key by default); see
:mod:`agent.sim.host`. ``/state`` shows each terminal's ``tusns`` and the refusals by reason
(``tusn_refusals``). A bad value is answered 400 with what is wrong, and changes nothing of the
TUSN settings. ``parameter_table`` is the table the 0810/360 is laid out in (see
:mod:`agent.sim.host_downloads`); status uploads are read with its lengths.

``accepted_schemes`` lists the sign-in schemes (60.3) the host takes; a sign-in of any other is
answered 40, as a posp_server-style host that lists only 004 and 006 answers it (by default all
it can issue keys for). ``/state`` shows them and the scheme of each sign-in received, in order
(``signin_schemes``). A bad list is answered 400 and changes no setting.

Fault kinds, each applied to the next ``count`` requests: ``no-answer``, ``late`` (answer after
``delay`` seconds), ``slow`` (taken at once, answered ``delay`` seconds later while the requests
after it are read and answered: a front end that answers out of order), ``garbage`` (random
bytes instead of the answer), ``close`` (close the connection instead of answering), ``partial``
(half the answer, then close the connection), ``wrong-mac`` (answer with a corrupted MAC),
``refused-first`` (a 97 without a MAC at once, as a host that lost the session sends it, then
the real answer), ``refused-late`` (the same, the real answer ``delay`` seconds later, the next
requests served meanwhile), ``held`` (the request is taken in ``delay`` seconds late and its
answer is lost, as from a host that stopped reading, then read what had piled up after the
terminal had given up on that connection), ``stray-tid`` and ``stray-mti`` (a forged approval
without a MAC for the same STAN, naming another terminal or answering another MTI, ``delay``
seconds before the real answer, as an attacker on the line would send it), ``no-mac`` (the
answer without its MAC, as hosts send declines). ``mti`` limits a fault to requests of that MTI
(the reversals, say).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import string
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sim.host import AcquirerHost, checked_schemes, registry_family
from agent.sim.jsonhttp import JsonHandler, serve_in_thread
from agent.sim.module import TEST_TUSN_KEY
from agent.wire.frame import Layout, decode_frame, host_frame, with_length
from agent.wire.message import Message, encode_message

FAULT_KINDS = (
    "no-answer", "late", "slow", "garbage", "close", "partial", "wrong-mac", "refused-first",
    "refused-late", "held", "stray-tid", "stray-mti", "no-mac", "no-stan",
)  # fmt: skip
MAX_FRAME = 8192


@dataclass
class Fault:
    kind: str
    delay: float = 0.0
    mti: str | None = None  # only requests of this MTI; any when None


class FaultQueue:
    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()

    def add(self, kind: str, count: int = 1, delay: float = 2.0, mti: str | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if count < 1 or delay < 0:
            raise ValueError("count must be 1 or more and delay 0 or more")
        with self._lock:
            self._queue.extend(Fault(kind, delay, mti) for _ in range(count))

    def take(self, mti: str = "") -> Fault | None:
        """The first fault for a request of ``mti``."""
        with self._lock:
            for fault in self._queue:
                if fault.mti in (None, mti):
                    self._queue.remove(fault)
                    return fault
            return None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> list[str]:
        with self._lock:
            return [f.kind for f in self._queue]


class HostServer:
    def __init__(self, host: AcquirerHost) -> None:
        self.host = host
        self.faults = FaultQueue()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self, address: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._client, address, port, ssl=tls)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            # the clients see their connection end; let them finish rather than be cancelled
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                if length > MAX_FRAME:
                    return  # hostile length: close rather than allocate
                request = await reader.readexactly(length)
                fault = self.faults.take(request[11:13].hex())  # after TPDU and header
                if fault is not None and fault.kind == "held":
                    self._hold(request, fault.delay)
                    continue
                response = self.host.handle(request)
                if fault is not None and fault.kind == "slow":
                    self._answer_later(writer, response, fault.delay)
                    continue
                if fault is not None and fault.kind == "refused-late":
                    if response is not None:
                        writer.write(with_length(refused(response)))
                    self._answer_later(writer, response, fault.delay)
                    continue
                if not await self._answer(writer, response, fault):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _hold(self, request: bytes, delay: float) -> None:
        """The ``held`` fault: the host takes the request in ``delay`` seconds from now."""
        task = asyncio.get_running_loop().create_task(asyncio.sleep(delay))
        task.add_done_callback(lambda _: self.host.handle(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer_later(
        self, writer: asyncio.StreamWriter, response: bytes | None, delay: float
    ) -> None:
        """The answer, made now, written ``delay`` seconds from now (``slow``, and the real
        answer of ``refused-late``)."""

        async def later() -> None:
            await asyncio.sleep(delay)
            if response is not None and not writer.is_closing():
                writer.write(with_length(response))

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, writer: asyncio.StreamWriter, response: bytes | None, fault: Fault | None
    ) -> bool:
        """Send the response, or what ``fault`` says instead; False closes the connection."""
        if fault is not None and fault.kind == "close":
            return False
        if response is None or (fault is not None and fault.kind == "no-answer"):
            return True
        if fault is not None and fault.kind == "late":
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.kind == "refused-first":
            writer.write(with_length(refused(response)))
        if fault is not None and fault.kind.startswith("stray-"):
            writer.write(with_length(stray(response, fault.kind)))
            await writer.drain()
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.kind == "garbage":
            junk = os.urandom(40)
            writer.write(with_length(junk))
        elif fault is not None and fault.kind == "partial":
            framed = with_length(response)
            writer.write(framed[: len(framed) // 2])
            await writer.drain()
            return False
        else:
            if fault is not None and fault.kind == "wrong-mac":
                response = response[:-1] + bytes([response[-1] ^ 0x01])
            if fault is not None and fault.kind == "no-mac":
                response = without(response, 64)
            if fault is not None and fault.kind == "no-stan":
                response = without(response, 11, 64)
            writer.write(with_length(response))
        await writer.drain()
        return True

    def state(self) -> dict[str, Any]:
        return {**self.host.state(), "faults": self.faults.pending()}


def refused(response: bytes) -> bytes:
    """A 97 without a MAC for the request that ``response`` answers (TPDU + header + message)."""
    frame = decode_frame(response, Layout.TPDU)
    assert frame.tpdu is not None and frame.header is not None
    fields = {n: v for n, v in frame.message.fields.items() if n not in (38, 64)}
    fields[39] = "97"
    body = encode_message(Message(frame.message.mti, fields))
    return host_frame(body, frame.tpdu, frame.header)[2:]


def without(response: bytes, *numbers: int) -> bytes:
    """``response`` with fields ``numbers`` left out: 64 as a host that MACs approvals only
    sends a decline; 11 as a host that echoes only the fields a download step lists."""
    frame = decode_frame(response, Layout.TPDU)
    assert frame.tpdu is not None and frame.header is not None
    fields = {n: v for n, v in frame.message.fields.items() if n not in numbers}
    body = encode_message(Message(frame.message.mti, fields))
    return host_frame(body, frame.tpdu, frame.header)[2:]


def stray(response: bytes, kind: str) -> bytes:
    """A forged approval without a MAC for the STAN ``response`` answers: naming another
    terminal (``stray-tid``) or answering another MTI (``stray-mti``)."""
    frame = decode_frame(response, Layout.TPDU)
    assert frame.tpdu is not None and frame.header is not None
    fields = {n: v for n, v in frame.message.fields.items() if n != 64}
    fields[39] = "00"
    mti = frame.message.mti
    if kind == "stray-tid":
        fields[41] = "99999999"
    else:
        mti = "0110" if mti != "0110" else "0210"
    body = encode_message(Message(mti, fields))
    return host_frame(body, frame.tpdu, frame.header)[2:]


# ------------------------------------------------------------------------------------- admin


def admin_handler(server: HostServer) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path == "/state":
                self.reply(200, server.state())
            else:
                self.not_found()

        def do_POST(self) -> None:
            host = server.host
            parts = self.path.strip("/").split("/")
            try:
                body = self.body()
                if parts == ["terminals"]:
                    tmk = bytes.fromhex(body["tmk"]) if "tmk" in body else None
                    family = registry_family(body)
                    host.register(body["tid"], body["mid"], tmk, family)
                elif len(parts) == 3 and parts[0] == "terminals":
                    tid, action = parts[1], parts[2]
                    if tid not in host.terminals:
                        self.reply(404, {"error": f"unknown terminal {tid}"})
                        return
                    if action == "cancel":
                        host.set_status(tid, "cancelled")
                    elif action == "activate":
                        host.set_status(tid, "active")
                    elif action == "forget":
                        host.forget(tid)
                    elif action == "require-signin":
                        host.terminals[tid].require_signin = bool(body.get("on", True))
                    elif action == "require-download":
                        host.terminals[tid].asks = 6
                    elif action == "ask":
                        requirement = int(body["requirement"])
                        if not 1 <= requirement <= 15:
                            raise ValueError("a processing requirement is 1 to 15")
                        host.terminals[tid].asks = requirement
                    elif action == "tusn":
                        if "tusn" not in body:
                            raise ValueError('"tusn" is missing: the TUSN to report or withdraw')
                        reported = body.get("reported", True)
                        if not isinstance(reported, bool):
                            raise ValueError(f"reported must be true or false, got {reported!r}")
                        host.report_tusn(tid, body["tusn"], reported)
                    else:
                        raise ValueError(f"unknown action {action!r}")
                elif parts == ["settings"]:
                    listed = body.get("accepted_schemes")
                    # checked before anything changes: a bad list changes no setting
                    schemes = checked_schemes(listed) if listed is not None else None
                    with host.lock:
                        # first: a bad TUSN setting is refused before anything else changes
                        host.set_tusn_check(
                            body.get("check_tusn", host.check_tusn),
                            body.get("tusn_refusal", host.tusn_refusal),
                            tusn_key(body["tusn_key"]) if "tusn_key" in body else host.tusn_key,
                        )
                        if "key_layout" in body:
                            host.set_key_layout(int(body["key_layout"]))
                        if "batch" in body:
                            host.batch = int(body["batch"]) % 1_000_000
                        if "check_batch" in body:
                            host.check_batch = bool(body["check_batch"])
                        if "chain_downloads" in body:
                            host.chain_downloads = bool(body["chain_downloads"])
                        if "download_fault" in body:
                            host.downloads.set_fault(str(body["download_fault"]))
                        if "parameter_table" in body:
                            host.downloads.set_parameter_table(str(body["parameter_table"]))
                        if schemes is not None:
                            host.set_accepted_schemes(schemes)
                elif parts == ["faults"]:
                    server.faults.add(
                        body["kind"],
                        int(body.get("count", 1)),
                        float(body.get("delay", 2.0)),
                        body.get("mti"),
                    )
                elif parts == ["faults", "clear"]:
                    server.faults.clear()
                elif parts == ["reload"]:
                    host.reload()
                else:
                    self.not_found()
                    return
            except (ValueError, KeyError, TypeError) as exc:
                self.reply(400, {"error": str(exc)})
                return
            self.reply(200, {"ok": True})

    return Handler


def tusn_key(text: object) -> bytes:
    """The ``tusn_key`` of ``/settings``: an SM4 key as hex. Errors never quote it."""
    digits = 2 * len(TEST_TUSN_KEY)
    wanted = f"tusn_key must be {digits} hex digits (an SM4 key)"
    if not isinstance(text, str):
        raise ValueError(f"{wanted}, not {type(text).__name__}")
    if len(text) != digits:
        raise ValueError(f"{wanted}, got {len(text)} characters")
    if not set(text) <= set(string.hexdigits):
        raise ValueError(f"{wanted}, got characters that are not hex digits")
    return bytes.fromhex(text)


def server_tls(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def main(
    registry: Path,
    listen: tuple[str, int],
    admin_port: int,
    tls: tuple[Path, Path] | None = None,
    **host_settings: Any,
) -> int:
    """``agent sim host``: prints one JSON line with the addresses, serves until SIGTERM/SIGINT;
    SIGHUP reloads the registry. ``tls`` is (certificate chain, private key) to serve TLS;
    ``host_settings`` go to :class:`AcquirerHost` (key layout, batch, profile)."""
    host = AcquirerHost(registry, **host_settings)
    server = HostServer(host)
    context = server_tls(*tls) if tls else None

    async def serve() -> None:
        address, port = await server.start(*listen, tls=context)
        httpd = serve_in_thread(admin_handler(server), admin_port, "host-admin")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, host.reload)
        print(
            json.dumps(
                {"listen": f"{address}:{port}", "admin": f"http://127.0.0.1:{httpd.server_port}"}
            ),
            flush=True,
        )
        await stop.wait()
        httpd.shutdown()
        await server.close()

    asyncio.run(serve())
    return 0
