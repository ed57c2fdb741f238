"""``agent demo``: the agent at work, with no configuration.

It starts the acquirer host, TMS and card module simulators in this process (the module on a real
pty), runs a real agent between them and a payment app, and tells the story: sign-in, a purchase
approved, the host forgets the terminal, the next purchase gets 97, the self-check, the remedy and
the approved retry; then the host cancels the terminal: 97, remedies fail, the terminal is
``unregistered`` with a message in Chinese and English; then the journal's timeline.
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
from agent.sim.site import MID, TID, Site, simulated_site
from agent.wire import codes
from agent.wire.frame import with_length
from agent.wire.mac import require_software_des
from agent.wire.message import Message, decode_message, encode_message

SUPPORT = "95516"
PAN = "6217001234567890123"  # a test card number: the journal and this output keep 6 + 4


class StoryBroken(Exception):
    """A step did not turn out as the story says."""


def _app_purchase(amount_fen: int, stan: int) -> Message:
    """What a payment app sends: no TID/MID, no MAC; the agent adds them."""
    return Message(
        "0200",
        {2: PAN, 3: "000000", 4: f"{amount_fen:012d}", 11: f"{stan:06d}", 14: "2812",
         22: "021", 25: "00", 49: "156", 60: "22000000"},
    )  # fmt: skip


async def _pay(socket: Path, amount_fen: int, stan: int) -> Message:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(with_length(encode_message(_app_purchase(amount_fen, stan))))
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        return decode_message(await reader.readexactly(length))
    finally:
        writer.close()


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
    await agent.app_socket.serve(socket)
    _say(f"Simulators: acquirer host {site.host_address}, TMS {site.tms_url}, card module on "
         f"{site.module_path}")  # fmt: skip
    _say(f"Terminal TID {TID}, MID {MID}; the payment app talks to {socket}")

    _say("\n1. The agent signs in (签到): 0800 -> 0810, working keys into the card module")
    for _ in range(3):  # as the daemon's later attempts would, on a machine that is busy
        await agent.start()
        if agent.journal.last_signin() is not None:
            break
    signed = agent.journal.last_signin()
    _expect(signed is not None, "the sign-in at start failed")
    assert signed is not None
    _say(f"   signed in, scheme {signed['scheme']}, KCVs {signed['kcvs']}")

    _say("\n2. A purchase of 12.34 CNY")
    response = await _pay(socket, 1234, 1)
    _say(f"   answer: {_answer(response)}")
    _expect(response.text(39) == "00", "the first purchase was not approved")

    _say("\n3. The host loses the terminal's session (a host-side fault), and the next "
         "purchase of 56.78 CNY gets 97")  # fmt: skip
    host.forget(TID)
    mark = time.time()
    response = await _pay(socket, 5678, 2)
    for entry in timeline.entries(agent.journal, mark):
        _say(f"   {entry['text']}")
    _say(f"   answer to the app: {_answer(response)}")
    _expect(response.text(39) == "00", "the purchase after the 97 was not approved")

    _say("\n4. The acquirer cancels the terminal; a purchase of 9.00 CNY")
    host.set_status(TID, "cancelled")
    mark = time.time()
    response = await _pay(socket, 900, 3)
    for entry in timeline.entries(agent.journal, mark):
        _say(f"   {entry['text']}")
    _say(f"   answer to the app: {_answer(response)}")
    _expect(agent.recovery.state is State.UNREGISTERED, "the terminal did not become unregistered")
    assert agent.recovery.message is not None
    _say("   on the terminal's screen (the display-message hook):")
    _say(f"     {agent.recovery.message.zh}")
    _say(f"     {agent.recovery.message.en}")
    sent = host.state()["requests"].get("0200", 0)
    response = await _pay(socket, 900, 4)
    _expect(host.state()["requests"].get("0200", 0) == sent, "the host got a purchase")
    _say(f"   the next purchase is answered at once, without host traffic: "
         f"{response.text(39)}, {response.text(63)[:60]}...")  # fmt: skip

    _say("\n5. The journal (agent journal)")
    for line in timeline.render(timeline.entries(agent.journal)).splitlines():
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
