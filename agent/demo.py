"""``agent demo``: the agent at work, with no configuration.

It starts the acquirer host, TMS and card module simulators in this process (the module on a real
pty), runs a real agent between them and a payment app, and tells the story: sign-in, a purchase
approved, a purchase with a PIN typed on the card module's keypad (through the module socket), a
void by the receipt number the app printed; the host forgets the terminal, the next purchase gets
97, the self-check, the remedy and the approved retry; then the host cancels the terminal: 97,
remedies fail, the terminal is ``unregistered`` with a message in Chinese and English; then the
journal's timeline.
Exit 0 when the story completed as told.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

from agent import timeline
from agent.config import build
from agent.recovery.policy import State
from agent.service.assembly import Agent
from agent.service.daemon import sign_in_at_start
from agent.sim.site import MID, TID, Site, simulated_site
from agent.wire import codes
from agent.wire.frame import with_length
from agent.wire.mac import require_software_des
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.pin import pin_pan
from drivers.framing import Frame, FrameParser
from drivers.module import Command, encode_pin_request

SUPPORT = "95516"
PAN = "6217001234567890123"  # a test card number: the journal and this output keep 6 + 4


class StoryBroken(Exception):
    """A step did not turn out as the story says."""


def _app_purchase(amount_fen: int, stan: int) -> Message:
    """What a payment app sends: no TID/MID, no MAC; the agent adds them."""
    return Message(
        "0200",
        {2: PAN, 3: "000000", 4: f"{amount_fen:012d}", 11: f"{stan:06d}", 14: "2812",
         22: "022", 25: "00", 49: "156", 60: "22000000"},
    )  # fmt: skip


async def _send(socket: Path, message: Message) -> Message:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(with_length(encode_message(message)))
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        return decode_message(await reader.readexactly(length))
    finally:
        writer.close()


async def _pay(socket: Path, amount_fen: int, stan: int) -> Message:
    return await _send(socket, _app_purchase(amount_fen, stan))


async def _pin_block(module_socket: Path) -> bytes:
    """The PIN block the payment app gets from the module's keypad, through the agent."""
    reader, writer = await asyncio.open_unix_connection(str(module_socket))
    try:
        request = encode_pin_request(0, pin_pan(PAN), 30)
        writer.write(Frame(1, Command.PIN_BLOCK, request).encode())
        await writer.drain()
        head = await reader.readexactly(3)
        body = await reader.readexactly(int.from_bytes(head[1:], "big") + 3)
        [answer] = FrameParser().feed(head + body)
    finally:
        writer.close()
    _expect(isinstance(answer, Frame) and answer.data[:1] == b"\x00", "no PIN block came")
    assert isinstance(answer, Frame)
    return answer.data[1:]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise StoryBroken(what)


def _answer(response: Message) -> str:
    code = response.text(39)
    rc = codes.lookup(code)
    return f"{code} {rc.zh} / {rc.en}"


async def _story(folder: Path) -> None:
    async with simulated_site(folder) as site:
        site.provision_in_tms([site.host_address])
        settings = site.agent_settings(folder)
        settings["terminal"]["support_phone"] = SUPPORT
        settings["host"]["response_timeout"] = 5
        settings["recovery"] = {"probe_first": 60}
        agent = Agent(build(settings, "demo", env={}))
        try:
            await _tell(site, agent, folder / "agent.sock")
        finally:
            await agent.close()


async def _tell(site: Site, agent: Agent, socket: Path) -> None:
    host = site.host
    journal = agent.journal
    await agent.app_socket.serve(socket)
    module_socket = socket.with_name("module.sock")
    await agent.module_proxy.serve(module_socket)
    _say(f"Simulators: acquirer host {site.host_address}, TMS {site.tms_url}, card module on "
         f"{site.module_path}")  # fmt: skip
    _say(f"Terminal TID {TID}, MID {MID}; the payment app talks to {socket}")

    _say("\n1. The agent signs in (签到): 0800 -> 0810, working keys into the card module")
    for _ in range(3):  # as the daemon's later attempts would, on a machine that is busy
        await sign_in_at_start(agent)
        if await journal.run(journal.last_signin) is not None:
            break
    signed = await journal.run(journal.last_signin)
    _expect(signed is not None, "the sign-in at start failed")
    assert signed is not None
    _say(f"   signed in, scheme {signed['scheme']}, KCVs {signed['kcvs']}")

    _say("\n2. A purchase of 12.34 CNY")
    response = await _pay(socket, 1234, 1)
    _say(f"   answer: {_answer(response)}")
    _expect(response.text(39) == "00", "the first purchase was not approved")

    _say("\n2a. A purchase of 88.00 CNY with a PIN: the cardholder types it on the module's keypad")
    _say(f"    (the app asks through {module_socket.name}; neither the app nor the agent sees it)")
    purchase = _app_purchase(8800, 2)
    block = await _pin_block(module_socket)
    purchase.fields.update({22: "021", 26: "12", 52: block, 53: "2600000000000000"})
    response = await _send(socket, Message("0200", dict(sorted(purchase.fields.items()))))
    verified = host.state()["pins_verified"]
    _say(f"   answer: {_answer(response)}; the host checked the PIN under its PIK: {verified}")
    _expect(response.text(39) == "00" and verified == 1, "the PIN purchase was not approved")

    _say("\n2b. The merchant voids the first purchase by its receipt number (STAN 000001)")
    void = _app_purchase(1234, 3)
    void.fields.update({3: "200000", 60: "23000000", 61: "000000000001"})
    response = await _send(socket, void)
    _say(f"   answer: {_answer(response)}; the agent named the original by the host's STAN")
    voided = [p for p in host.state()["purchases"].values() if p.get("voided")]
    _expect(response.text(39) == "00" and len(voided) == 1, "the void did not reach its original")

    _say("\n3. The host loses the terminal's session (a host-side fault), and the next "
         "purchase of 56.78 CNY gets 97")  # fmt: skip
    host.forget(TID)
    mark = time.time()
    response = await _pay(socket, 5678, 4)
    for entry in await journal.run(timeline.entries, journal, mark):
        _say(f"   {entry['text']}")
    _say(f"   answer to the app: {_answer(response)}")
    _expect(response.text(39) == "00", "the purchase after the 97 was not approved")

    _say("\n4. The acquirer cancels the terminal; a purchase of 9.00 CNY")
    host.set_status(TID, "cancelled")
    mark = time.time()
    response = await _pay(socket, 900, 5)
    for entry in await journal.run(timeline.entries, journal, mark):
        _say(f"   {entry['text']}")
    _say(f"   answer to the app: {_answer(response)}")
    _expect(agent.recovery.state is State.UNREGISTERED, "the terminal did not become unregistered")
    assert agent.recovery.message is not None
    _say("   on the terminal's screen (the display-message hook):")
    _say(f"     {agent.recovery.message.zh}")
    _say(f"     {agent.recovery.message.en}")
    sent = host.state()["requests"].get("0200", 0)
    response = await _pay(socket, 900, 6)
    _expect(host.state()["requests"].get("0200", 0) == sent, "the host got a purchase")
    _say(f"   the next purchase is answered at once, without host traffic: "
         f"{response.text(39)}, {response.text(63)[:60]}...")  # fmt: skip

    _say("\n5. The journal (agent journal)")
    for line in timeline.render(await journal.run(timeline.entries, journal)).splitlines():
        _say(f"   {line}")


def run_demo(verbose: bool = False) -> int:
    require_software_des()  # the simulators issue and use keys in software
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pos-agent-demo-") as folder:
        try:
            asyncio.run(_story(Path(folder)))
        except StoryBroken as exc:
            _say(f"\nThe demo did not go as told: {exc}")
            return 1
    _say(f"\nThe story completed in {time.monotonic() - started:.1f} s.")
    return 0
