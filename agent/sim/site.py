"""The three simulators in one process, as the acquirer's side of one terminal: the host over
TCP, the card module on a pty, the TMS over HTTP. ``agent demo`` runs on it, and so do the tests
and benchmarks that keep an agent in their own event loop."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sim.host import TEST_TERMINAL, AcquirerHost
from agent.sim.host_server import HostServer
from agent.sim.jsonhttp import serve_in_thread
from agent.sim.module import ModuleSimulator, ModuleState
from agent.sim.module_port import SimulatedModulePort
from agent.sim.tms import Tms, tms_handler

TID, MID = TEST_TERMINAL["tid"], TEST_TERMINAL["mid"]


@dataclass
class Site:
    host: AcquirerHost
    server: HostServer
    host_address: str  # HOST:PORT
    module_port: SimulatedModulePort
    module_path: str
    tms: Tms
    tms_url: str

    def agent_settings(self, folder: Path) -> dict[str, dict[str, Any]]:
        """The configuration (as parsed TOML) of an agent for the test terminal between these
        simulators, with its files in ``folder``."""
        return {
            "terminal": {"tid": TID, "mid": MID},
            "host": {"primary": self.host_address},
            "module": {"url": self.module_path},
            "gateway": {"socket": str(folder / "agent.sock")},
            "journal": {"path": str(folder / "journal.sqlite3")},
            "tms": {"url": self.tms_url},
            "hooks": {"directory": str(folder / "hooks.d")},
        }

    def provision_in_tms(self, hosts: list[str], **changes: Any) -> None:
        """What the TMS holds for this module's terminal, changed as given."""
        record = {"tid": TID, "mid": MID, "hosts": hosts}
        self.tms.put(self.module_port.simulator.state.serial, {**record, **changes})


@contextlib.asynccontextmanager
async def simulated_site(
    folder: Path, host_tls: ssl.SSLContext | None = None
) -> AsyncIterator[Site]:
    host = AcquirerHost(folder / "host-registry.json")
    server = HostServer(host)
    address, port = await server.start(tls=host_tls)
    module_port = SimulatedModulePort(
        ModuleSimulator(ModuleState.load_or_create(folder / "module-state.json"))
    )
    tms = Tms(folder / "tms.json")
    tms_http = serve_in_thread(tms_handler(tms), 0, "tms")
    try:
        module_path = module_port.start_pty(folder / "module")
        yield Site(
            host, server, f"{address}:{port}", module_port, module_path, tms,
            f"http://127.0.0.1:{tms_http.server_port}",
        )  # fmt: skip
    finally:
        await server.close()
        module_port.stop()
        tms_http.shutdown()
        tms_http.server_close()
