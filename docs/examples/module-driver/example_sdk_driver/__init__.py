"""An example card module driver for pos-agent (DESIGN.md section 12): a module reached through
its vendor's SDK (:mod:`example_sdk_driver.vendor_sdk`) rather than pos-agent's serial line.

What a driver does, and what ``agent module check --driver example-sdk`` proves it does right:
each :class:`~drivers.module.CardModule` method is one call of the SDK; the SDK's return codes
become the interface's errors (a module gone: ``ModuleLinkError``, no answer:
``ModuleTimeout``, a refusal: ``ModuleStatusError`` with the module's status); the device is
opened at the first command, not by the factory, and opened again after it went away.
"""

from __future__ import annotations

import threading
from datetime import datetime

from drivers.module import (
    ENCRYPT_WITH_TDK,
    KEY_NUMBERS,
    PIN_BLOCK_BYTES,
    CardModule,
    Command,
    KeyFamily,
    KeyStatus,
    MacAlgorithm,
    ModuleInfo,
    ModuleLinkError,
    ModuleProtocolError,
    ModuleSettings,
    ModuleStatusError,
    ModuleTimeout,
    PinFormat,
    Status,
    TmkLoad,
    TusnAnswer,
    decode_info,
    decode_key_status,
    decode_rtc,
    decode_tusn_answer,
    encode_load_tmk,
    encode_pin_request,
    encode_tusn_request,
)
from example_sdk_driver import vendor_sdk

UPTIME_BYTES = 4
MAC_BYTES = 8


class ExampleSdkModule(CardModule):
    """The module at ``address`` as the vendor's SDK reaches it. The agent calls it from
    several threads; the SDK's session is shared, and opened once."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._session: vendor_sdk.Session | None = None
        self._opening = threading.Lock()

    def _open(self) -> vendor_sdk.Session:
        with self._opening:
            if self._session is None:
                self._session = vendor_sdk.Session(self.address)
            return self._session

    def _answer(self, command: Command, request: bytes) -> bytes:
        """The module's answer, status byte first; the SDK's failures as the interface's."""
        code, answer = self._open().transceive(command, request)
        if code == vendor_sdk.OK and answer:
            return answer
        said = vendor_sdk.MESSAGES.get(code, "no status byte")
        where = f"card module at {self.address} (vendor SDK, code {code}: {said})"
        if code == vendor_sdk.ERR_TIMEOUT:
            raise ModuleTimeout(f"{where} did not answer {command.name}")
        if code == vendor_sdk.ERR_LINK:
            self.close()  # a session outlives no unplug: the next command opens a new one
            raise ModuleLinkError(f"{where} failed during {command.name}")
        raise ModuleProtocolError(f"{where} answered {command.name} unreadably")

    def _command(self, command: Command, request: bytes = b"") -> bytes:
        """The data of a successful answer; a refusal is :class:`ModuleStatusError`."""
        answer = self._answer(command, request)
        status = answer[0]
        if status != Status.OK:
            # a KCV mismatch names the key in the byte after the status
            mismatch = status == Status.KCV_MISMATCH and len(answer) > 1
            key = KEY_NUMBERS.get(answer[1]) if mismatch else None
            raise ModuleStatusError(command, status, key)
        return answer[1:]

    def _sized(self, command: Command, request: bytes, size: int) -> bytes:
        data = self._command(command, request)
        if len(data) != size:
            raise ModuleProtocolError(
                f"{command.name} answer carries {len(data)} data bytes, expected {size}"
            )
        return data

    def ping(self) -> int:
        return int.from_bytes(self._sized(Command.PING, b"", UPTIME_BYTES), "big")

    def info(self) -> ModuleInfo:
        return decode_info(self._command(Command.INFO))

    def key_status(self, slot: int = 0) -> KeyStatus:
        return decode_key_status(slot, self._command(Command.KEY_STATUS, bytes([slot])))

    def rtc(self) -> datetime:
        return decode_rtc(self._command(Command.RTC))

    def load_working_keys(self, slot: int, layout: int, field62: bytes) -> None:
        self._command(Command.LOAD_WORKING_KEYS, bytes([slot, layout]) + field62)

    def load_tmk(self, slot: int, family: KeyFamily, ciphertext: bytes, kcv: bytes) -> None:
        self._command(Command.LOAD_TMK, encode_load_tmk(TmkLoad(slot, family, ciphertext, kcv)))

    def mac(self, slot: int, algorithm: MacAlgorithm, data: bytes) -> bytes:
        return self._sized(Command.MAC, bytes([slot, algorithm]) + data, MAC_BYTES)

    def pin_block(
        self, slot: int, pan12: str, timeout: int, *, format: PinFormat = PinFormat.ISO_FORMAT_0
    ) -> bytes:
        request = encode_pin_request(slot, pan12, timeout, format=format)
        return self._sized(Command.PIN_BLOCK, request, PIN_BLOCK_BYTES[PinFormat(format)])

    def encrypt(self, slot: int, data: bytes) -> bytes:
        return self._sized(Command.ENCRYPT, bytes([slot, ENCRYPT_WITH_TDK]) + data, len(data))

    def tusn(self, factor: str) -> TusnAnswer:
        return decode_tusn_answer(self._command(Command.TUSN, encode_tusn_request(factor)))

    def forward(self, command: Command, data: bytes) -> bytes:
        return self._answer(command, data)

    def close(self) -> None:
        with self._opening:
            session, self._session = self._session, None
        if session is not None:
            session.close()


def open_module(settings: ModuleSettings) -> ExampleSdkModule:
    """The entry point (``example-sdk`` in group ``pos_agent.modules``): the module at
    ``module.url``, opened at its first command."""
    return ExampleSdkModule(settings.url)
