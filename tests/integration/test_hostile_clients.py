"""Hostile peers on every socket: lengths that claim more than any frame, slow-loris clients,
floods of connections, and a payment-socket client without the service's group."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from agent.config import Endpoint
from agent.host.channel import MAX_FRAME
from agent.host.link import HostLink, HostLinkError
from agent.wire.builders import Terminal, echo_request
from agent.wire.frame import Header, Tpdu
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_host_claiming_a_huge_frame_is_cut_off_without_allocating_it() -> None:
    """A host (or a man in the middle) sends a length prefix of 65535 and keeps the line open."""

    async def scenario():
        done = asyncio.Event()

        async def liar(reader, writer):
            await reader.read(1024)
            writer.write(b"\xff\xff" + b"\x00" * 32)  # 65535 claimed, 32 sent
            await writer.drain()
            await done.wait()  # and keep the line open
            writer.close()

        server = await asyncio.start_server(liar, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = HostLink([Endpoint("127.0.0.1", port)], tpdu=Tpdu(), header=Header(),
                        response_timeout=3.0)  # fmt: skip
        echo = echo_request(Terminal("10000001", "898100012340001"), stan=1, batch=1)
        started = time.monotonic()
        try:
            await link.request(echo)
        except HostLinkError as exc:
            assert "65535" in str(exc) and str(MAX_FRAME) in str(exc)
        else:
            raise AssertionError("a 65535-byte claim was accepted")
        finally:
            await link.close()
            done.set()
            server.close()
            await server.wait_closed()
        # refused at the prefix: it neither waited for nor made room for the 65535 bytes
        assert time.monotonic() - started < 1.0

    run(scenario())


def test_slow_loris_flood_does_not_starve_a_real_purchase(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.app_socket.frame_timeout = 0.5
            stalled = []
            for _ in range(50):  # each sends the first byte of a length and nothing more
                reader, writer = await asyncio.open_unix_connection(str(rig.socket))
                writer.write(b"\x00")
                await writer.drain()
                stalled.append((reader, writer))  # the writer too: dropping it hangs up
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "00"
            closed = await asyncio.gather(*(r.read() for r, _ in stalled))  # the agent hung up
            assert closed == [b""] * 50
            assert rig.agent.stats.bad_frames == 50
            for _, writer in stalled:
                writer.close()

    run(scenario())


def test_a_flood_of_connections_at_once(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            opened = await asyncio.gather(
                *(asyncio.open_unix_connection(str(rig.socket)) for _ in range(300))
            )
            for _, writer in opened:  # connect and go away without a byte
                writer.close()
            answers = await asyncio.gather(
                *(
                    exchange(rig.socket, app_purchase(1000 + 100 * i, app_stan=i + 1))
                    for i in range(60)
                )
            )
            assert [a.text(39) for a in answers] == ["00"] * 60

    run(scenario())


def test_payment_socket_refuses_a_user_outside_the_service_group(tmp_path) -> None:
    """The socket is mode 0660: the kernel refuses a process that is neither its owner nor in its
    group. The test runs as root (CI and these machines do) to start that process as nobody."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("starting a process as another user needs root")
    # pytest's own folders are 0700: the socket goes where nobody may walk to it
    folder = Path(tempfile.mkdtemp(prefix="pos-agent-perm-"))
    os.chmod(folder, 0o755)

    async def scenario():
        async with gateway_rig(folder) as rig:
            assert os.stat(rig.socket).st_mode & 0o777 == 0o660
            probe = (
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                f"try:\n    s.connect({str(rig.socket)!r})\n"
                "except PermissionError:\n    sys.exit(13)\nsys.exit(0)\n"
            )

            def as_user(**who) -> int:
                return subprocess.run(
                    # Debian's python: nobody may not enter the directory of this test's venv
                    ["/usr/bin/python3", "-S", "-c", probe],
                    timeout=30,
                    **who,
                ).returncode

            outsider = await asyncio.to_thread(as_user, user=65534, group=65534, extra_groups=[])
            member = await asyncio.to_thread(
                as_user, user=65534, group=65534, extra_groups=[os.stat(rig.socket).st_gid]
            )
            assert (outsider, member) == (13, 0)

    try:
        run(scenario())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
