"""Re-provisioning records: validated like the configuration file, kept atomically, laid over the
file at start; anything malformed is an error naming where it came from and what is wrong."""

import json
import re

import pytest

from agent.config import build
from agent.provisioning import Provisioning, ProvisioningError, effective, load_saved, save

GOOD = {"tid": "10000002", "mid": "898100012340002", "hosts": ["10.0.0.7:5000", "10.0.0.8:5000"],
        "tpdu_destination": "0005", "key_slot": 1}  # fmt: skip


def test_a_record_is_laid_over_the_configuration() -> None:
    config = build({"terminal": {"tid": "10000001", "mid": "898100012340001",
                                 "support_phone": "95516"}}, "agent.toml", env={})  # fmt: skip
    applied = Provisioning.from_record(GOOD, "TMS http://tms").apply(config)
    assert (applied.terminal.tid, applied.terminal.mid) == ("10000002", "898100012340002")
    assert applied.terminal.support_phone == "95516"  # what the record does not say stays
    assert [str(e) for e in applied.endpoints] == ["10.0.0.7:5000", "10.0.0.8:5000"]
    assert (applied.wire.tpdu_destination, applied.module.key_slot) == (0x0005, 1)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ([1, 2], "TMS x: expected a JSON object, got list"),
        ({"mid": "898100012340002"}, "TMS x: tid and mid are required"),
        ({**GOOD, "tid": "123"}, "TMS x: terminal.tid = '123': expected 8 printable ASCII"),
        ({**GOOD, "hosts": ["a:1", "b:2", "c:3"]}, "at most two hosts"),
        ({**GOOD, "hosts": "10.0.0.7:5000"}, "hosts must be a list of HOST:PORT strings"),
        ({**GOOD, "hosts": ["10.0.0.7"]}, "host.primary = '10.0.0.7': expected HOST:PORT"),
        ({**GOOD, "tpdu_destination": "zz"}, "wire.tpdu_destination = 'zz': expected 4 hex"),
    ],
)
def test_malformed_records_name_the_source_and_the_field(record, error: str) -> None:
    with pytest.raises(ProvisioningError, match=re.escape(error)):
        Provisioning.from_record(record, "TMS x")


def test_saved_atomically_and_read_back(tmp_path) -> None:
    path = tmp_path / "state" / "provisioning.json"
    save(path, Provisioning.from_record(GOOD, "TMS http://tms"))
    mode = path.stat().st_mode & 0o777
    assert mode & 0o600 == 0o600 and mode & 0o037 == 0  # the group may read (technicians)
    assert load_saved(path).to_record() == {**GOOD, "source": "TMS http://tms"}
    assert not list(path.parent.glob("*.tmp"))


def test_garbage_saved_file_is_named_and_never_a_reason_to_stop(tmp_path, caplog) -> None:
    """DESIGN.md section 8: the configuration file alone is used; the service moves the
    damaged file aside, a technician's command only says so."""
    path = tmp_path / "provisioning.json"
    path.write_text("{not json")
    config = build({}, "agent.toml", env={})
    with pytest.raises(ProvisioningError, match=f"{path}: not valid JSON"):
        load_saved(path)
    assert effective(config, path) is config
    assert f"{path}: not valid JSON" in caplog.text and path.exists()
    assert effective(config, path, service=True) is config
    assert not path.exists() and len(list(tmp_path.glob("provisioning.json.damaged-*"))) == 1
    path.write_text(json.dumps({**GOOD, "mid": "short"}))
    with pytest.raises(ProvisioningError, match=re.escape("terminal.mid = 'short'")):
        load_saved(path)


def test_no_saved_file_leaves_the_configuration_alone(tmp_path) -> None:
    config = build({}, "agent.toml", env={})
    assert effective(config, tmp_path / "provisioning.json") is config
