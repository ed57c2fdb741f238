import pytest

from tests.processes import HostProcess, ModuleProcess, MosquittoProcess, write_config


@pytest.fixture
def simulators(tmp_path):
    """The host and module simulators as processes, and a configuration for an agent between
    them: (host, module, config path)."""
    host, module = HostProcess(tmp_path), ModuleProcess(tmp_path)
    yield host, module, write_config(tmp_path, host, module)
    host.stop()
    module.stop()


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port, stopped after the test."""
    mosquitto = MosquittoProcess(tmp_path)
    yield mosquitto
    mosquitto.stop()
