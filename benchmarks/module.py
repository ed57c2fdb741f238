"""Card-module link figures: MAC round trips per second over a pty, bytes on the wire per MAC in
each direction, and what one retransmission costs (after a NAK, and after a lost ACK).

The simulator runs as its own process (``agent sim module``), as a module is its own device.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from report import print_figures

from agent.sim.module import TEST_TMK
from agent.wire.mac import mac_block
from agent.wire.working_keys import issue_working_keys
from drivers.framing import ACK, NAK, Frame, FrameParser
from drivers.serial_module import SerialCardModule

TARGET_BYTES = 40
BAUD = 115200
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop
R = mac_block(b"\x02\x00" + bytes(120))


def simulator_process(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    agent = Path(sys.executable).with_name("agent")
    process = subprocess.Popen(
        [str(agent), "sim", "module", "--pty", "--state", str(workdir / "state.json")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def mac_throughput(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        process, path = simulator_process(Path(workdir))
        try:
            with SerialCardModule(path) as module:
                clear = {"PIK": bytes(range(16)), "MAK": bytes(range(16, 32))}
                module.load_working_keys(0, 2, issue_working_keys(TEST_TMK, 2, clear).to_field62())
                module.mac_from_block(R)
                before = (module.stats.bytes_out, module.stats.bytes_in)
                started = time.perf_counter()
                for _ in range(count):
                    module.mac_from_block(R)
                elapsed = time.perf_counter() - started
                out = (module.stats.bytes_out - before[0]) / count
                back = (module.stats.bytes_in - before[1]) / count
        finally:
            process.terminate()
            process.wait(timeout=10)
    request = len(Frame(0, 0x11, bytes(10)).encode())
    response = len(Frame(0, 0x91, bytes(9)).encode())
    return {
        "mac_round_trips_per_s": round(count / elapsed, 1),
        "mac_round_trip_ms_mean": round(elapsed / count * 1000, 3),
        "bytes_to_module_per_mac": out,  # request frame + ACK of the response
        "bytes_from_module_per_mac": back,  # ACK of the request + response frame
        "request_frame_bytes": request,
        "response_frame_bytes": response,
        # A pty has no baud rate; on a real 115200 8N1 line each MAC also spends this long in
        # transit, which caps a real module at about 1000 / this many MACs per second.
        "line_time_ms_per_mac_at_115200": round((out + back) * BITS_PER_BYTE / BAUD * 1000, 2),
    }


class Peer:
    """A pty peer that answers PING, NAKing or ignoring the first transmission of each request."""

    def __init__(self, first: str) -> None:
        self.first = first  # "nak", "ignore" or "answer"
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.slave, self.path = slave, os.ttyname(slave)
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        parser = FrameParser()
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.02)[0]:
                continue
            for event in parser.feed(os.read(self.master, 4096)):
                if not isinstance(event, Frame):
                    continue
                if event.seq not in self._seen and self.first != "answer":
                    self._seen.add(event.seq)
                    if self.first == "nak":
                        os.write(self.master, bytes([NAK]))
                    continue
                reply = Frame(event.seq, event.cmd | 0x80, b"\x00" + bytes(4)).encode()
                os.write(self.master, bytes([ACK]) + reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def ping_ms(first: str, count: int) -> float:
    peer = Peer(first)
    try:
        with SerialCardModule(peer.path) as module:
            module.ping()
            times = []
            for _ in range(count):
                started = time.perf_counter()
                module.ping()
                times.append((time.perf_counter() - started) * 1000)
    finally:
        peer.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    args = parser.parse_args()
    macs, pings = (200, 3) if args.quick else (3000, 15)
    figures = mac_throughput(macs)
    clean = ping_ms("answer", pings * 3)
    after_nak = ping_ms("nak", pings)
    after_timeout = ping_ms("ignore", pings)
    figures.update(
        {
            "retransmit_after_nak_ms": round(after_nak - clean, 3),
            "retransmit_after_lost_ack_ms": round(after_timeout - clean, 3),
            "target_bytes_each_way": TARGET_BYTES,
            "within_target": max(
                figures["bytes_to_module_per_mac"], figures["bytes_from_module_per_mac"]
            )
            <= TARGET_BYTES,
        }
    )
    print_figures("module", {**figures, "macs": macs})


if __name__ == "__main__":
    main()
