"""The control socket under a flood (DESIGN.md section 10): connections that say nothing, or
never read their answers, neither pile up nor keep a technician's command out."""

import asyncio
import json

from agent.service.control import MAX_CLIENTS, ControlServer


async def status(_: dict) -> dict:
    return {"state": "registered", "padding": "x" * 60_000}


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def ask(path, line: bytes = b'{"cmd": "status"}\n') -> dict:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(line)
        return json.loads(await reader.readline())
    finally:
        writer.close()


def test_a_flood_of_silent_connections_keeps_no_command_out(tmp_path) -> None:
    async def scenario():
        server = ControlServer({"status": status})
        path = tmp_path / "control.sock"
        await server.serve(path)
        silent = []
        try:
            for _ in range(200):
                silent.append(await asyncio.open_unix_connection(str(path)))
            await asyncio.sleep(0.5)  # all of them in, or turned away
            answer = await ask(path)
            assert answer["ok"] and answer["state"] == "registered"
            assert server._connections.count <= MAX_CLIENTS
        finally:
            for _, writer in silent:
                writer.transport.abort()
            await server.close()

    run(scenario())


def test_a_silent_or_unreading_client_is_closed_after_the_idle_timeout(tmp_path) -> None:
    async def scenario():
        server = ControlServer({"status": status})
        server.idle_timeout = 0.3
        path = tmp_path / "control.sock"
        await server.serve(path)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            assert await asyncio.wait_for(reader.read(), 2) == b""  # said nothing: closed
            writer.close()
            # asks again and again, never reads: the answers fill the socket's buffers
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "status"}\n' * 100)
            await asyncio.sleep(1.0)
            assert server._connections.count == 0
            writer.transport.abort()  # its unsent requests dropped
        finally:
            await server.close()

    run(scenario())
