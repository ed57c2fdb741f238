"""The host link under a hung or non-reading host (issue: hardening), over real TCP: consecutive
response timeouts fail over to the backup; a host that stops reading never wedges a write."""

import asyncio
import contextlib
import dataclasses
import socket

from agent.config import Endpoint
from agent.host.channel import Channel, ChannelClosed
from agent.recovery.remedies import reconfigure
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


class HangingProxy:
    """A host in front of the simulator whose process can hang: once ``hang`` is set, the
    kernel still completes handshakes and takes bytes, and nothing is ever answered."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hang = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(source, sink, upstream: bool) -> None:
            while data := await source.read(4096):
                if not self.hang:
                    sink.write(data)
                    await sink.drain()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False),
                             return_exceptions=True)  # fmt: skip

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


def test_a_hung_primary_is_failed_over_after_consecutive_timeouts(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            # the same simulator behind two endpoints: the primary is a proxy that will hang
            real = rig.config.host.primary
            proxy = HangingProxy(real.port)
            port = await proxy.start()
            primary = Endpoint("127.0.0.1", port)
            options = rig.agent.link.options
            rig.agent.link.reconfigure(dataclasses.replace(options, endpoints=(primary, real)))
            try:
                assert (await exchange(rig.socket, app_purchase(100))).text(39) == "00"
                assert rig.agent.link.status.endpoint == str(primary)
                proxy.hang = True
                answers = [(await exchange(rig.socket, app_purchase(101 + n))).text(39)
                           for n in range(2)]  # fmt: skip
                # the first may have reached the host: 98 and a reversal, which goes before the
                # next sale and times out too: that sale is not sent (96, reversal pending)
                assert answers == ["98", "96"]
                [down] = [e for e in rig.agent.journal.events() if e["kind"] == "host-down"]
                assert down["endpoint"] == str(primary)
                assert "2 response timeouts in a row" in down["reason"]
                assert (await exchange(rig.socket, app_purchase(300))).text(39) == "00"
                assert rig.agent.link.status.endpoint == str(real)
                # the reversals went to the backup first; the host never saw those sales
                assert rig.agent.journal.queued_reversals() == []
                assert rig.host.state()["duplicates"] == 0
            finally:
                await proxy.close()

    run(scenario())


def test_a_host_that_never_reads_cannot_wedge_a_write(tmp_path) -> None:
    async def scenario():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        port = listener.getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        accepted, _ = listener.accept()  # and never read from
        channel = Channel(Endpoint("127.0.0.1", port), reader, writer, write_timeout=0.5)
        frame = len(bytes(8000)).to_bytes(2, "big") + bytes(8000)
        sent = 0
        try:
            async with asyncio.timeout(20):
                while True:
                    await channel.send(frame)
                    sent += 1
        except ChannelClosed as exc:
            assert "stopped reading" in str(exc)
        assert sent > 0
        channel.close()
        accepted.close()
        listener.close()

    run(scenario())


def test_a_reload_that_changes_idle_echo_applies_it(tmp_path) -> None:
    import dataclasses

    async def scenario():
        async with gateway_rig(tmp_path, host_options={"idle_echo": 0}) as rig:
            assert (await exchange(rig.socket, app_purchase(100))).text(39) == "00"
            config = rig.agent.config
            faster = dataclasses.replace(
                config, host=dataclasses.replace(config.host, idle_echo=0.2)
            )
            assert reconfigure(rig.agent.settings, rig.agent.link, faster) == ["host"]
            for _ in range(40):
                if rig.host.state()["requests"].get("0820", 0) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert rig.host.state()["requests"].get("0820", 0) >= 2  # echo tests on an idle link
            off = dataclasses.replace(faster, host=dataclasses.replace(faster.host, idle_echo=0))
            reconfigure(rig.agent.settings, rig.agent.link, off)
            await asyncio.sleep(0.3)
            echoes = rig.host.state()["requests"]["0820"]
            await asyncio.sleep(0.5)
            assert rig.host.state()["requests"]["0820"] == echoes  # turned off again

    run(scenario())


class NatProxy(HangingProxy):
    """A NAT in front of the simulator that can drop its state: the connections it carried
    then go silent without closing, while new ones pass."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.generation = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        born = self.generation
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(source, sink) -> None:
            while data := await source.read(4096):
                if self.generation == born:
                    sink.write(data)
                    await sink.drain()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer),
                             return_exceptions=True)  # fmt: skip

    def drop_state(self) -> None:
        self.generation += 1


def test_a_silent_connection_to_the_only_host_is_replaced(tmp_path) -> None:
    """A single-host terminal whose connection went silent (no FIN, no RST) connects afresh
    after ``host.failover_after`` timeouts in a row, instead of refusing every sale."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            real = rig.config.host.primary
            proxy = NatProxy(real.port)
            port = await proxy.start()
            only = Endpoint("127.0.0.1", port)
            options = rig.agent.link.options
            rig.agent.link.reconfigure(dataclasses.replace(options, endpoints=(only,)))
            try:
                assert (await exchange(rig.socket, app_purchase(100))).text(39) == "00"
                proxy.drop_state()
                answers = []
                for n in range(5):
                    answers.append((await exchange(rig.socket, app_purchase(200 + n))).text(39))
                    if answers[-1] == "00":
                        break
                assert answers[-1] == "00" and len(answers) <= 3, answers
                assert rig.host.state()["duplicates"] == 0
            finally:
                await proxy.close()

    run(scenario())
