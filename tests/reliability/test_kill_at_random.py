"""Kill the agent (SIGKILL, a real process) at random points of a stream of purchases, restart
it, and count what was lost or duplicated against the host's own ledger.

A purchase is lost when the host approved it, never received its reversal, and the journal does
not hold it as completed. It is duplicated when the host approved the same terminal, batch and
STAN twice. Both must be zero. POS_AGENT_KILL_RUNS sets the number of runs (default 200).
"""

import itertools
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator

from agent.wire.frame import with_length
from agent.wire.message import decode_message, encode_message
from tests.integration.gateway_rig import app_purchase
from tests.processes import (
    AgentProcess,
    HostProcess,
    ModuleProcess,
    wait_for,
    write_config,
)

RUNS = int(os.environ.get("POS_AGENT_KILL_RUNS", "200"))


def purchase_stream(path, stop: threading.Event, answers: list[str], stans: Iterator[int]) -> None:
    """New purchases one after another on one connection until the agent dies. Their STANs go on
    across runs: a STAN and amount the agent has seen would get the first answer again (the replay
    window) without reaching the host, and a kill could not land in flight."""
    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(str(path))
        while not stop.is_set():
            stan = next(stans)
            client.sendall(with_length(encode_message(app_purchase(1000 + stan, app_stan=stan))))
            head = client.recv(2)
            if len(head) < 2:
                return
            length, body = int.from_bytes(head, "big"), b""
            while len(body) < length:
                chunk = client.recv(length - len(body))
                if not chunk:
                    return
                body += chunk
            answers.append(decode_message(body).text(39))
    except OSError:
        return
    finally:
        client.close()


def journal_states(path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT stan, state FROM transactions WHERE mti = '0200'").fetchall()
        queued = db.execute("SELECT count(*) FROM reversals WHERE state = 'queued'").fetchone()[0]
    finally:
        db.close()
    states = dict(rows)
    states["queued reversals"] = str(queued)
    return states


def test_kill_at_random_points_loses_and_duplicates_nothing(tmp_path) -> None:
    seed = int(os.environ.get("POS_AGENT_KILL_SEED", random.randrange(10**6)))
    chooser = random.Random(seed)
    host, module = HostProcess(tmp_path), ModuleProcess(tmp_path)
    config = write_config(tmp_path, host, module)
    sock, log = tmp_path / "agent.sock", tmp_path / "agent.log"
    answers: list[str] = []
    stans = itertools.count(1)
    try:
        for _ in range(RUNS):
            agent = AgentProcess(config, sock, log)
            agent.wait_ready()
            stop = threading.Event()
            client = threading.Thread(target=purchase_stream, args=(sock, stop, answers, stans))
            client.start()
            time.sleep(chooser.uniform(0, 0.05))
            agent.kill()
            stop.set()
            client.join(timeout=10)
        agent = AgentProcess(config, sock, log)  # the last start sends every queued reversal
        agent.wait_ready()
        journal = tmp_path / "journal.sqlite3"
        wait_for(lambda: journal_states(journal)["queued reversals"] == "0", 60, "reversals")
        assert agent.stop() == 0
        ledger = host.state()
    finally:
        host.stop()
        module.stop()

    states = journal_states(tmp_path / "journal.sqlite3")
    purchases = ledger["purchases"]
    lost = [
        key for key, p in purchases.items()
        if not p["reversed"] and states.get(key.split("/")[2]) != "completed"
    ]  # fmt: skip
    reversed_but_completed = [
        key for key, p in purchases.items()
        if p["reversed"] and states.get(key.split("/")[2]) == "completed"
    ]  # fmt: skip
    summary = (
        f"seed {seed}: {RUNS} runs, {len(answers)} answers to the app, "
        f"{len(purchases)} host approvals, {ledger['reversals']} reversals received, "
        f"lost {len(lost)}, duplicated {ledger['duplicates']}"
    )
    print(summary)
    assert answers, "no purchase completed at all: the kill window is too short to test anything"
    assert sum(p["reversed"] for p in purchases.values()) > 0, "no kill hit a purchase in flight"
    assert lost == [], summary
    assert ledger["duplicates"] == 0, summary
    assert reversed_but_completed == [], f"approved to the app, then reversed: {summary}"
