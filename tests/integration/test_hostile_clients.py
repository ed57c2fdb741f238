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
from agent.host.link import HostLink, HostLinkError, LinkOptions
from agent.wire.builders import Terminal, echo_request
from agent.wire.frame import Header, Tpdu, with_length
from agent.wire.message import decode_message, encode_message
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
        options = LinkOptions(
            (Endpoint("127.0.0.1", port),), Tpdu(), Header(), response_timeout=3.0
        )
        link = HostLink(options)
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
            # beyond gateway.max_clients a connection waits for room: stalled ones time out
            # mid-frame (or, idle long enough, are closed to make room)
            assert rig.agent.stats.bad_frames + rig.agent.app_socket.evicted == 50
            for _, writer in stalled:
                writer.close()

    run(scenario())


def test_a_flood_of_connections_at_once(tmp_path) -> None:
    """Connect-and-go churn beside 60 concurrent sales (the cap, gateway.max_clients, is raised
    above the sales here: what the cap does under a flood is the idle-flood tests' business)."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"gateway": {"max_clients": 400}}) as rig:
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


def test_tcp_listener_refuses_a_user_outside_the_service_group(tmp_path) -> None:
    """The kernel cannot check a TCP peer: the agent asks /proc/net/tcp who owns the connecting
    socket. nobody is refused (no answer, the connection closed); root gets its purchase."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("starting a process as another user needs root")

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            port = await rig.serve_tcp()
            frame = with_length(encode_message(app_purchase(1000)))
            client = (
                "import socket, sys\n"
                f"s = socket.create_connection(('127.0.0.1', {port}))\n"
                f"s.sendall({frame!r})\n"
                "s.settimeout(10)\n"
                "try:\n    answer = s.recv(2)\n"
                "except OSError:\n    answer = b''\n"
                "sys.exit(0 if answer else 3)\n"
            )

            def as_user(**who) -> int:
                return subprocess.run(
                    ["/usr/bin/python3", "-S", "-c", client], timeout=30, **who
                ).returncode

            outsider = await asyncio.to_thread(as_user, user=65534, group=65534, extra_groups=[])
            assert outsider == 3  # closed without an answer
            assert await asyncio.to_thread(as_user) == 0  # root
            assert rig.agent.app_socket.admission.refused == 1
            assert len(rig.host.state()["purchases"]) == 1  # only root's reached the host

    run(scenario())


def test_an_outsiders_connect_loop_on_the_tcp_listener_does_not_stall_purchases(
    tmp_path, monkeypatch
) -> None:
    """nobody connects to the TCP listener in a loop, as fast as it can, while root pays over
    TCP: every purchase is answered 00, the outsider is refused each time, and the kernel's
    socket table is never read on the event loop's thread (it grows with the flood, and each
    read of it would hold up every socket the agent serves)."""
    import threading

    from agent.transaction import peers

    if os.geteuid() != 0:
        import pytest

        pytest.skip("starting a process as another user needs root")
    read_on_loop: list[str] = []
    lookup = peers.tcp_peer

    def guarded(sock):
        try:
            asyncio.get_running_loop()
            read_on_loop.append(threading.current_thread().name)
        except RuntimeError:
            pass
        return lookup(sock)

    monkeypatch.setattr(peers, "tcp_peer", guarded)

    async def tcp_exchange(port: int, message) -> object:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(with_length(encode_message(message)))
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            return decode_message(await reader.readexactly(length))
        finally:
            writer.close()

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            port = await rig.serve_tcp()
            loop = (
                "import socket, time\n"
                "made, until = 0, time.monotonic() + 4\n"
                "while time.monotonic() < until:\n"
                "    try:\n"
                f"        s = socket.create_connection(('127.0.0.1', {port}))\n"
                "        made += 1\n"
                "        s.close()\n"
                "    except OSError:\n"
                "        pass\n"
                "print(made)\n"
            )
            outsider = asyncio.create_task(
                asyncio.to_thread(
                    subprocess.run,
                    ["/usr/bin/python3", "-S", "-c", loop],
                    user=65534,
                    group=65534,
                    extra_groups=[],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            )
            await asyncio.sleep(0.5)  # the loop is running
            answers = []
            for i in range(20):
                message = app_purchase(1000 + i, app_stan=i + 1)
                answers.append(await asyncio.wait_for(tcp_exchange(port, message), 10))
            made = int((await outsider).stdout)
            assert [a.text(39) for a in answers] == ["00"] * 20
            assert made >= 100, made
            assert rig.agent.app_socket.admission.refused >= made // 2
            assert read_on_loop == []

    run(scenario())


def test_an_idle_flood_makes_room_and_logs_little(tmp_path, caplog) -> None:
    """200 connections that never send a byte: beyond gateway.max_clients the one idle the
    longest is closed for the next; a purchase gets in; the log does not grow per connection."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"gateway": {"max_clients": 8}}) as rig:
            idle = [await asyncio.open_unix_connection(str(rig.socket)) for _ in range(8)]
            await asyncio.sleep(0.1)  # quiet past the grace of a fresh connection
            more = [await asyncio.open_unix_connection(str(rig.socket)) for _ in range(192)]
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert rig.agent.app_socket.evicted >= 8
            for _, writer in idle + more:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w in idle + more), return_exceptions=True)

    run(scenario())
    assert caplog.text.count("connection refused") <= 2


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"gateway": {"idle_timeout": 0.3}}) as rig:
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())
