"""The CPU the agent's threads run on (``gateway.cpu``).

The agent's threads hand each request to one another: from the event loop to a worker that
journals it, to the thread that waits for the card module's MAC and back, to the loop that sends
it. They run Python one at a time (the GIL), so the agent never uses more than one CPU's worth
of it. Spread over CPUs, each hand-off wakes another CPU, and an idle CPU is slow to wake: on the
benchmarks' VM the agent added 0.08-0.11 ms less to a purchase on one CPU, with 0.1 ms less CPU
(issue 26); an ARM terminal's deep idle states take longer still. "last" is the highest-numbered
CPU the process may use: the first CPU is the one most devices interrupt (on that VM, on CPU 0
the gain was nothing), and systemd's ``CPUAffinity=`` or a cpuset narrows the choice.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)


def confine(setting: str) -> int | None:
    """Put every thread of the process, and so the threads it starts later, on one CPU, as
    ``setting`` says; returns that CPU, or None when the threads stay where the kernel puts them
    (``"any"``, or a CPU the kernel refuses: logged)."""
    if setting == "any":
        return None
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed) if setting == "last" else int(setting)
    try:
        os.sched_setaffinity(0, {cpu})  # this thread first: a CPU refused is refused here
    except OSError as exc:  # a CPU this process may not use, or one that is not there
        log.warning(
            "gateway.cpu = %r: the agent's threads cannot be put on CPU %d (%s); they run "
            "where the kernel puts them, on CPUs %s",
            setting, cpu, exc.strerror or exc, ",".join(map(str, sorted(allowed))),
        )  # fmt: skip
        return None
    for thread in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(thread), {cpu})
    log.info("the agent's threads run on CPU %d (gateway.cpu = %r)", cpu, setting)
    return cpu
