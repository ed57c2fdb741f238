"""A MAC computed while the caller's own work runs (``computing_mac``: the request's MAC while the
journal syncs its pending row): the real driver against the simulator over a real pty and over
socket://. The command goes out as the block begins and its answer is read as it ends, on the
caller's thread; the line stays usable meanwhile and is left clean whatever the block does."""

import threading
import time

import pytest

from agent.wire.mac import mac_block, software_cup_mac
from drivers.module import CardModule, ModuleError
from tests.integration.module_rig import simulator_rig
from tests.integration.test_module_line import CLEAR, load

MAB = b"\x02\x00" + bytes(range(120))
EXPECTED = software_cup_mac(MAB, CLEAR["MAK"])


@pytest.fixture(params=["pty", "tcp"])
def rig(request, tmp_path):
    with simulator_rig(tmp_path, request.param) as rig:
        load(rig.module)
        yield rig


def executed_within(rig, before: int, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if rig.sim.executed > before:
            return True
        time.sleep(0.001)
    return False


def test_the_module_computes_while_the_block_runs(rig) -> None:
    before = rig.sim.executed
    with rig.module.computing_mac(mac_block(MAB)) as mac:
        assert executed_within(rig, before), "the command was not on the line during the block"
    assert mac.result() == EXPECTED


def test_the_default_of_other_drivers_computes_once_the_block_has_run(rig) -> None:
    before = rig.sim.executed
    with CardModule.computing_mac(rig.module, mac_block(MAB)) as mac:
        assert not executed_within(rig, before, 0.1)
    assert mac.result() == EXPECTED


def test_the_line_serves_others_meanwhile_and_the_answer_is_kept(rig) -> None:
    """Another command during the block (a self-check's PING while the disk is frozen) reads the
    started command's answer first and keeps it for it."""
    answers = []
    with rig.module.computing_mac(mac_block(MAB)) as mac:
        other = threading.Thread(target=lambda: answers.append(rig.module.key_status(0)))
        other.start()
        other.join(5)
        assert answers and answers[0]["MAK"].present
        assert mac.result() == EXPECTED  # settled by the other command already
    assert mac.result() == EXPECTED
    assert rig.module.mac_from_block(mac_block(MAB[::-1])) == software_cup_mac(
        MAB[::-1], CLEAR["MAK"]
    )


def test_a_block_that_fails_leaves_the_answer_read_and_the_line_clean(rig) -> None:
    with pytest.raises(LookupError), rig.module.computing_mac(mac_block(MAB)) as mac:
        raise LookupError("the journal could not record the request")
    assert mac.result() == EXPECTED
    assert rig.module.ping() >= 0
    assert rig.module.mac_from_block(mac_block(MAB)) == EXPECTED


def test_a_lost_first_transmission_goes_out_again(rig) -> None:
    rig.port.faults.drop = 1.0  # the request's bytes never reach the module
    with rig.module.computing_mac(mac_block(MAB)) as mac:
        time.sleep(0.05)
        rig.port.faults.drop = 0.0
    assert mac.result() == EXPECTED
    assert rig.module.stats.retransmits >= 1


def test_an_unplugged_module_is_the_outcomes_error(rig) -> None:
    rig.port.unplug()
    with rig.module.computing_mac(mac_block(MAB)) as mac:
        pass
    with pytest.raises(ModuleError):
        mac.result()
    rig.port.replug()
    assert rig.module.mac_from_block(mac_block(MAB)) == EXPECTED


def test_its_outcome_is_not_there_before_the_block_ends(rig) -> None:
    with rig.module.computing_mac(mac_block(MAB)) as mac, pytest.raises(RuntimeError):
        mac.result()
    assert mac.result() == EXPECTED
