"""Terminal-parameter tables (DESIGN.md section 16): the built-in table, a wire profile's
``[parameters]`` laid over it, two real acquirers' tables with and without their profile, and
field 62 of the status upload as the agent builds it and the host simulator reads it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, build, load
from agent.hook_dispatch import HookDispatch
from agent.journal import Journal
from agent.session import parameters
from agent.session.host_session import HostSession
from agent.session.store import ParameterStore
from agent.settings import Settings
from agent.sim.host_downloads import PARAMETER_TABLES, HostParameters
from agent.wire.profile import CUP, ProfileError, load_profile
from drivers.module import ModuleInfo, ModuleTimeout

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "docs/examples/profiles"
REAL_TABLES = ("huateng", "aiaunionpay")
DEVICES = b"011021031041051"  # keyboard, PIN pad, card reader, printer, display: all working
WORKING = {name: True for _, name in parameters.STATUS_DEVICES}


def sent(table: str) -> bytes:
    """Field 62 of the host simulator's 0810/360 in ``table``."""
    return b"".join(tag.encode() + value for tag, value in PARAMETER_TABLES[table])


def overrides(table: str) -> Any:
    return load_profile(PROFILES / f"{table}.toml").parameters


def test_the_built_in_table_is_design_section_16() -> None:
    assert [(t.number, t.length, t.kind) for t in parameters.TAGS.values()] == [
        ("11", 2, "n"), ("12", 2, "n"), ("13", 1, "n"), ("14", 14, "an"), ("15", 14, "an"),
        ("16", 14, "an"), ("17", 14, "an"), ("18", 1, "n"), ("19", 2, "n"), ("20", 1, "n"),
        ("21", 1, "n"), ("22", 40, "gb2312"), ("23", 1, "n"), ("24", 1, "n"), ("25", 1, "n"),
        ("26", 4, "b"), ("27", 1, "n"), ("28", 1, "n"), ("29", 1, "n"), ("30", 2, "n"),
        ("51", 12, "an"),
    ]  # fmt: skip
    assert CUP.parameters == {}


def test_the_built_in_table_decodes_the_cup_host_completely() -> None:
    decoded = parameters.decode(sent("cup"))
    assert (decoded["unparsed"], decoded["reason"]) == (None, None)
    values = decoded["values"]
    assert values["merchant_name"] == "测试商户银联商务有限公司"
    assert (values["master_key_index"], values["transactions_enabled"]) == ("1", "FFB80000")
    assert (values["transaction_phone_2"], values["tag_51"]) == ("", "001100111098")


@pytest.mark.parametrize("table", REAL_TABLES)
def test_a_real_table_decodes_completely_with_its_profile(table: str) -> None:
    decoded = parameters.decode(sent(table), overrides(table))
    assert (decoded["unparsed"], decoded["reason"]) == (None, None)
    assert decoded["tags"] == {tag: value.hex().upper() for tag, value in PARAMETER_TABLES[table]}


def test_what_the_real_tables_send_reads_as_sent() -> None:
    huateng = parameters.decode(sent("huateng"), overrides("huateng"))["values"]
    assert (huateng["master_key_index"], huateng["transactions_enabled"]) == ("e0", "fc3f0000")
    assert huateng["offline_upload_mode"] == ""  # a space, as text: trailing spaces dropped
    aia = parameters.decode(sent("aiaunionpay"), overrides("aiaunionpay"))["values"]
    assert (aia["tip_percent"], aia["master_key_index"], aia["tag_51"]) == (
        " 5",
        "1",
        "001100111098",
    )


@pytest.mark.parametrize(
    ("table", "stop", "reason"),
    [
        ("huateng", "24", "tag 24 (offline_upload_mode) is ' ', not digits"),
        ("aiaunionpay", "19", "tag 19 (tip_percent) is ' 5', not digits"),
    ],
)
def test_without_its_profile_a_real_table_is_kept_raw_from_where_it_differs(
    table: str, stop: str, reason: str
) -> None:
    data = sent(table)
    decoded = parameters.decode(data)
    assert decoded["reason"] == reason
    tags = [tag for tag, _ in PARAMETER_TABLES[table]]
    assert list(decoded["tags"]) == tags[: tags.index(stop)]
    kept = bytes.fromhex(decoded["unparsed"])
    assert kept.startswith(stop.encode()) and data.endswith(kept)


@pytest.mark.parametrize("table", ["cup", *REAL_TABLES])
@pytest.mark.parametrize("profile", [None, *REAL_TABLES])
def test_no_value_is_ever_read_with_a_wrong_length(table: str, profile: str | None) -> None:
    """Whatever the profile, each value decoded is exactly what the host sent for its tag, and
    decoded values and what is kept raw make up the whole field."""
    data = sent(table)
    decoded = parameters.decode(data, overrides(profile) if profile else None)
    host = dict(PARAMETER_TABLES[table])
    assert all(bytes.fromhex(value) == host[tag] for tag, value in decoded["tags"].items())
    rebuilt = b"".join(tag.encode() + bytes.fromhex(v) for tag, v in decoded["tags"].items())
    assert rebuilt + bytes.fromhex(decoded["unparsed"] or "") == data
    assert (decoded["unparsed"] is None) == (decoded["reason"] is None)


def test_a_value_the_next_tag_does_not_confirm_is_kept_raw() -> None:
    """A length read wrong shows up as garbage where the next tag should be: the value before
    an unknown tag is kept raw too, never kept with a length that may be wrong."""
    data = b"133" + b"2510" + b"26" + bytes(4)  # a host sending 25 as two characters
    decoded = parameters.decode(data)
    assert decoded["values"] == {"retries": "3"}
    assert decoded["unparsed"] == data[3:].hex().upper()
    assert decoded["reason"] == (
        "unknown tag '02' at byte 6; tag 25 before it is kept raw too: its length is unsure"
    )
    # the case: a table with 25 two long read the host's "1" + the next tag's "2" as 12
    data = b"251" + b"26" + bytes.fromhex("FFB80000")
    decoded = parameters.decode(data, {"25": (2, "n")})
    assert (decoded["values"], decoded["unparsed"]) == ({}, data.hex().upper())
    assert decoded["reason"].startswith("unknown tag hex 36FF at byte 4; tag 25 before it")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"12" + b"6x", "tag 12 (timeout_seconds) is '6x', not digits"),
        (b"14" + b"\x01" * 14, "tag 14 (transaction_phone_1) is hex 0101"),
        (b"14" + "电话".encode("gb2312").ljust(14), "not ASCII text"),
        (b"22" + b"\xff" * 40, "tag 22 (merchant_name) is hex FFFF"),
        (b"22" + b"short", "tag 22 (merchant_name) needs 40 bytes, 5 are left"),
        (b"26" + b"\x00\x01", "tag 26 (transactions_enabled) needs 4 bytes, 2 are left"),
        (b"51" + b"ABC", "tag 51 (tag_51) needs 12 bytes, 3 are left"),
    ],
)
def test_a_value_not_of_its_kind_or_cut_stops_decoding_there(data: bytes, reason: str) -> None:
    decoded = parameters.decode(b"1260" + b"133" + data)
    assert decoded["values"] == {"timeout_seconds": "60", "retries": "3"}
    assert reason in decoded["reason"]
    assert decoded["unparsed"] == data.hex().upper()


def test_an_override_changes_a_tag_or_adds_one() -> None:
    decoded = parameters.decode(b"25" + b"\x07" + b"31" + b"042", {"25": (1, "b"), "31": (3, "n")})
    assert decoded["values"] == {"master_key_index": "07", "tag_31": "042"}
    assert decoded["reason"] is None


# ----------------------------------------------------------------------------- the profile


def write(folder: Path, text: str) -> Path:
    path = folder / "acquirer.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"5" = { length = 1, kind = "n" }', "[parameters] tag '5': a tag is 2 digits"),
        ('125 = { length = 1, kind = "n" }', "[parameters] tag '125': a tag is 2 digits"),
        ('ab = { length = 1, kind = "n" }', "[parameters] tag 'ab': a tag is 2 digits"),
        ("25 = 3", "[parameters] tag 25: expected { length = N, kind = K }, got 3"),
        ('25 = { kind = "n" }', "[parameters] tag 25: length is missing"),
        ("25 = { length = 2 }", "[parameters] tag 25: kind is missing"),
        ('25 = { length = 0, kind = "n" }', "tag 25: length = 0: expected a whole number from 1"),
        ('25 = { length = 100, kind = "n" }', "tag 25: length = 100: expected a whole number"),
        ('25 = { length = "2", kind = "n" }', "tag 25: length = '2': expected a whole number"),
        ('25 = { length = true, kind = "n" }', "tag 25: length = True: expected a whole number"),
        ('25 = { length = 1.5, kind = "n" }', "tag 25: length = 1.5: expected a whole number"),
        ('25 = { length = 2, kind = "x" }', "tag 25: kind = 'x': expected one of n, an, b, gb2312"),
        ("25 = { length = 2, kind = 1 }", "tag 25: kind = 1: expected one of n, an, b, gb2312"),
        (
            '25 = { length = 2, kind = "an", name = "key" }',
            "tag 25: name = 'key': unknown key; expected length and kind",
        ),
    ],
)
def test_a_bad_parameters_row_is_refused_naming_file_tag_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, f"[parameters]\n{text}\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_parameters_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "parameters = 3\n")
    with pytest.raises(ProfileError, match="parameters: expected a table"):
        load_profile(path)


def test_the_overrides_are_frozen_data_and_fields_still_apply(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[fields.60]\nmax = 20\n[parameters]\n25 = { length = 2, kind = "an" }\n'
    )
    profile = load_profile(path)
    assert dict(profile.parameters) == {"25": (2, "an")}
    assert profile.fields[60].max_len == 20
    with pytest.raises(TypeError):
        profile.parameters["26"] = (8, "an")  # type: ignore[index]
    assert load_profile(PROFILES / "huateng.toml").parameters == {
        "24": (1, "an"), "25": (2, "an"), "26": (8, "an"),
    }  # fmt: skip


def test_the_configuration_names_both_files_for_a_bad_row(tmp_path: Path) -> None:
    profile = write(tmp_path, '[parameters]\n25 = { length = 2, kind = "hex" }\n')
    config_path = tmp_path / "agent.toml"
    config_path.write_text(f'[wire]\nprofile = "{profile}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(config_path, env={})
    assert str(err.value).startswith(f"{config_path}: wire.profile: {profile}: [parameters] tag 25")


# ------------------------------------------------------------------------- the status upload


def test_the_status_field_before_any_download_is_the_devices() -> None:
    assert parameters.status_field(WORKING, b"") == DEVICES
    assert parameters.status_field({**WORKING, "pin_pad": False}, b"") == b"011020031041051"


def test_the_status_field_sends_what_was_decoded_and_51_last() -> None:
    data = b"133" + b"51" + b"ABCDEFGHIJKL" + b"1260"
    assert parameters.status_field(WORKING, data) == DEVICES + b"133" + b"1260" + b"51ABCDEFGHIJKL"
    # what was kept raw is not sent
    assert parameters.status_field(WORKING, b"133" + b"2510" + b"26") == DEVICES + b"133"
    # a host's own 01-05 (read with a profile) are not sent again after the agent's
    echoed = parameters.status_field(WORKING, b"010" + b"133", {"01": (1, "n")})
    assert echoed == DEVICES + b"133"


@pytest.mark.parametrize("table", ["cup", *REAL_TABLES])
def test_the_host_simulator_accepts_the_agents_upload_under_each_table(table: str) -> None:
    host = HostParameters(parameter_table=table)
    profile = overrides(table) if table in REAL_TABLES else None
    field62 = parameters.status_field(WORKING, sent(table), profile)
    assert host.answer("0820", "362", field62) == ("00", None)
    assert host.statuses == [{"01": b"1", "02": b"1", "03": b"1", "04": b"1", "05": b"1",
                              **dict(PARAMETER_TABLES[table])}]  # fmt: skip


@pytest.mark.parametrize(
    ("table", "field62", "problem"),
    [
        ("cup", DEVICES + b"52" + b"SIM0000000000001", "unknown status tag '52' at byte 15"),
        ("cup", DEVICES + b"2512", "unknown status tag '2' at byte 18"),
        ("cup", DEVICES + b"22short", "tag 22 needs 40 bytes, 5 are left"),
        ("cup", b"011" + b"021", "device tags 03, 04, 05 missing"),
        ("cup", b"012" + DEVICES[3:], "device tag 01 is b'2', not 0 or 1"),
        ("cup", DEVICES + b"133" + b"133", "tag 13 twice"),
        ("huateng", DEVICES + b"251", "tag 25 needs 2 bytes, 1 are left"),
        ("huateng", DEVICES + b"51" + b"001100111098", "unknown status tag '51' at byte 15"),
    ],
)
def test_the_host_simulator_refuses_an_upload_a_cup_host_cannot_read(
    table: str, field62: bytes, problem: str
) -> None:
    host = HostParameters(parameter_table=table)
    assert host.answer("0820", "362", field62) == ("30", None)
    assert (host.statuses, host.status_refusals) == ([], [problem])
    assert host.status_uploads == [field62.hex().upper()]


def test_the_host_simulator_knows_three_tables() -> None:
    host = HostParameters()
    with pytest.raises(ValueError, match="one of 'cup', 'huateng', 'aiaunionpay'"):
        host.set_parameter_table("visa")
    host.set_parameter_table("huateng")
    assert host.answer("0800", "360", b"") == ("00", sent("huateng"))


class _Module:
    def __init__(self, tampered: bool | None) -> None:
        self.tampered = tampered

    def info(self) -> ModuleInfo:
        if self.tampered is None:
            raise ModuleTimeout("no answer to INFO")
        return ModuleInfo("SIM0000000000001", "sim", "1.0", self.tampered)


@pytest.mark.parametrize(("tampered", "pin_pad"), [(False, b"1"), (True, b"0"), (None, b"0")])
def test_the_pin_pad_is_the_card_module(
    tmp_path: Path, tampered: bool | None, pin_pad: bytes
) -> None:
    """Working when it answers INFO untampered; the other devices the agent cannot see."""
    settings = Settings(build({}, "test", env={}))
    journal = Journal(tmp_path / "journal.sqlite3")
    store = ParameterStore(tmp_path / "parameters.json")
    store.replace("terminal", {"raw": (b"133" + b"2510").hex().upper()})

    async def settled() -> None:
        return None

    session = HostSession(
        settings, journal, object(), _Module(tampered),  # type: ignore[arg-type]
        store, HookDispatch(settings, journal), settled,
    )  # fmt: skip
    try:
        assert asyncio.run(session._status_upload()) == b"01102" + pin_pad + b"031041051133"
    finally:
        journal.close()
