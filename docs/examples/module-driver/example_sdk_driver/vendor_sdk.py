"""Stands in for a vendor's SDK, the library a security module is reached through: usually a
Python binding of a C library (ctypes, cffi), with sessions opened by address, commands by code
and return codes instead of exceptions.

This one reaches the module through pos-agent's own serial driver, so that the example runs
against ``agent sim module``. Nothing of it is what a vendor writes: the driver beside it is.
"""

from __future__ import annotations

from drivers.module import Command, ModuleLinkError, ModuleProtocolError, ModuleTimeout
from drivers.serial_module import SerialCardModule

OK = 0
ERR_LINK = -1  # the device is gone, or does not acknowledge
ERR_TIMEOUT = -2  # the device acknowledged but did not answer in time
ERR_PROTOCOL = -3  # the device answered something the SDK cannot read

MESSAGES = {
    ERR_LINK: "device not reachable",
    ERR_TIMEOUT: "no answer in time",
    ERR_PROTOCOL: "unreadable answer",
}


class Session:
    """A session with one device, usable from several threads at once."""

    def __init__(self, address: str) -> None:
        self._device = SerialCardModule(address)

    def transceive(self, code: int, request: bytes) -> tuple[int, bytes]:
        """The return code and, when it is OK, the module's answer: status byte, then data."""
        try:
            return OK, self._device.forward(Command(code), request)
        except ModuleTimeout:
            return ERR_TIMEOUT, b""
        except ModuleLinkError:
            return ERR_LINK, b""
        except ModuleProtocolError:
            return ERR_PROTOCOL, b""

    def close(self) -> None:
        self._device.close()
