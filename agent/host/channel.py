"""One connection to a host: frames of a 2-byte big-endian length and a payload, in and out."""

from __future__ import annotations

import asyncio
import contextlib

from agent.config import Endpoint

MAX_FRAME = 8192  # bytes a host frame may claim; more is a broken or hostile host
# A host that accepts and stops reading fills the socket buffers; then a write waits for room.
# That wait is bounded, so a wedged host fails its requests instead of holding them forever.
WRITE_TIMEOUT = 5.0


class ChannelClosed(Exception):
    """The connection cannot carry another frame; the text says why."""


async def write_frame(
    writer: asyncio.StreamWriter, frame: bytes, patience: float, peer: str
) -> None:
    """Write ``frame`` to ``peer``; what the socket does not take at once waits in the
    transport's buffer and is drained within ``patience`` seconds (a peer that does not read
    must not hold us). Raises :class:`ChannelClosed` saying why it was not written."""
    writer.write(frame)
    if writer.is_closing():  # the write failed: the transport closed itself
        raise ChannelClosed("send failed: the connection is closed")
    if not writer.transport.get_write_buffer_size():
        return  # the socket took the whole frame: nothing to drain, no timeout to set
    try:
        async with asyncio.timeout(patience):
            await writer.drain()
    except TimeoutError:
        unsent = writer.transport.get_write_buffer_size()
        raise ChannelClosed(
            f"{peer} stopped reading: {unsent} bytes unsent after {patience:g} s"
        ) from None
    except (OSError, ConnectionError) as exc:
        raise ChannelClosed(f"send failed: {exc}") from None


class Channel:
    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame: int = MAX_FRAME,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self._reader, self._writer = reader, writer
        self.max_frame = max_frame
        self.write_timeout = write_timeout

    async def send(self, frame: bytes) -> None:
        """Write one complete frame (length included); raises :class:`ChannelClosed`, also when
        the host has not taken the bytes within ``write_timeout``."""
        await write_frame(self._writer, frame, self.write_timeout, "the host")

    async def receive(self) -> bytes:
        """The payload of the next frame (without its length); raises :class:`ChannelClosed`."""
        try:
            length = int.from_bytes(await self._reader.readexactly(2), "big")
            if length > self.max_frame:
                raise ChannelClosed(
                    f"host sent a frame length of {length} bytes (at most {self.max_frame})"
                )
            return await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise ChannelClosed(
                f"host closed the connection ({len(exc.partial)} bytes of a frame)"
            ) from None
        except (OSError, ConnectionError) as exc:
            raise ChannelClosed(f"connection error: {exc}") from None

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self, timeout: float = 2.0) -> None:
        """After :meth:`close`: wait for the transport to finish, within ``timeout`` (a TLS peer
        that never answers the close must not hold a shutdown)."""
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self._writer.wait_closed()
