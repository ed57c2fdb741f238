"""The download data of DESIGN.md section 16 without a host: TLVs (hostile ones too), terminal
parameter tag runs with GB2312 text, list parts, CA keys checked by SHA-1."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.session import emv, parameters, tlv
from agent.session.store import ParameterStore
from agent.sim.host_downloads import sample_ca_key

# A CA key as EMV lays it out; DF03 computed here with hashlib, independently of emv.ca_key.
RID, INDEX, MODULUS, EXPONENT = bytes.fromhex("A000000333"), b"\x08", bytes(range(128)), b"\x03"


def test_tlv_forms() -> None:
    assert tlv.parse(bytes.fromhex("9F0605A000000333DF028180") + bytes(128)) == [
        ("9F06", RID),
        ("DF02", bytes(128)),
    ]
    assert tlv.parse(bytes.fromhex("FF805403000001")) == [("FF8054", b"\x00\x00\x01")]
    assert tlv.parse(bytes.fromhex("00005F2A020156")) == [("5F2A", b"\x01\x56")]  # padding
    assert tlv.encode("DF02", bytes(300))[:5] == bytes.fromhex("DF02") + b"\x82\x01\x2c"


@given(
    st.lists(st.tuples(st.sampled_from(["9F06", "DF02", "FF8054", "5A"]), st.binary(max_size=300)))
)
def test_tlv_round_trip(items) -> None:
    assert tlv.parse(tlv.encode_all(items)) == items


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ("9F0605A0000003", "says 5 bytes, 4 are left"),
        ("9F", "runs past the end"),
        ("9F8080808006", "runs past the end"),
        ("9F06", "has no length"),
        ("DF0283000001", "bad length form 0x83"),
        ("DF0282FF", "bad length form 0x82"),
    ],
)
def test_hostile_tlvs_are_refused_with_the_tag_and_offset(data: str, text: str) -> None:
    with pytest.raises(tlv.TlvError, match=text):
        tlv.parse(bytes.fromhex(data))


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_tlv_error(data: bytes) -> None:
    try:
        items = tlv.parse(data)
    except tlv.TlvError:
        return
    assert sum(len(v) for _, v in items) <= len(data)


def test_terminal_parameters_with_gb2312_merchant_name() -> None:
    name = "测试商户".encode("gb2312").ljust(40)
    data = b"1260" + b"133" + b"22" + name + b"251" + b"99XYZ"
    decoded = parameters.decode(data)
    assert decoded["values"] == {
        "timeout_seconds": "60",
        "retries": "3",
        "merchant_name": "测试商户",
    }
    # an unknown tag: kept, not guessed, and the value before it too (its length is unsure)
    assert decoded["unparsed"] == (b"251" + b"99XYZ").hex().upper()
    assert decoded["reason"].startswith("unknown tag '99' at byte 52; tag 25 before it")
    assert decoded["tags"]["22"] == name.hex().upper()


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"22" + b"short", "needs 40 bytes, 5 are left"),
        (b"12" + b"6x", "not digits"),
        (b"22" + b"\xff" * 40, "not GB2312"),
        (b"14" + "电话".encode("gb2312").ljust(14), "not ASCII"),
    ],
)
def test_bad_terminal_parameters_are_kept_raw_with_the_reason(data: bytes, text: str) -> None:
    decoded = parameters.decode(data)
    assert decoded["values"] == {} and decoded["unparsed"] == data.hex().upper()
    assert text in decoded["reason"]


def test_list_parts() -> None:
    body = tlv.encode_all([("9F06", RID), ("9F22", b"\x01"), ("9F06", RID), ("9F22", b"\x02")])
    more, entries = emv.list_part(b"2" + body)
    assert more and [dict(e)["9F22"] for e in entries] == [b"\x01", b"\x02"]
    assert emv.list_part(b"0") == (False, [])
    with pytest.raises(emv.DownloadDataError, match="begins with 0, 1 or 2"):
        emv.list_part(b"7" + body)
    with pytest.raises(emv.DownloadDataError, match="not 9F06"):
        emv.list_part(b"1" + tlv.encode("9F22", b"\x01"))


def test_ca_key_is_checked_against_its_sha1() -> None:
    digest = hashlib.sha1(RID + INDEX + MODULUS + EXPONENT).digest()
    items = [
        ("9F06", RID),
        ("9F22", INDEX),
        ("DF02", MODULUS),
        ("DF04", EXPONENT),
        ("DF03", digest),
    ]
    key = emv.ca_key(items)
    assert (key.rid, key.index) == ("A000000333", "08")
    wrong = [*items[:-1], ("DF03", bytes(20))]
    with pytest.raises(emv.DownloadDataError, match="A000000333/08: DF03 0000"):
        emv.ca_key(wrong)
    with pytest.raises(emv.DownloadDataError, match="lacks DF02"):
        emv.ca_key([items[0], items[1]])
    assert emv.ca_key(sample_ca_key(1)).index == "01"  # the host simulator's keys pass


def test_store_replaces_one_section_atomically(tmp_path) -> None:
    store = ParameterStore(tmp_path / "parameters.json")
    assert store.read() == {}
    store.replace("terminal", {"values": {"retries": "3"}})
    store.replace("ca_keys", {"keys": []})
    data = store.read()
    assert data["terminal"]["values"] == {"retries": "3"} and data["ca_keys"]["keys"] == []
    assert (tmp_path / "parameters.json").stat().st_mode & 0o777 == 0o640
    (tmp_path / "parameters.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"parameters\.json are unreadable"):
        store.read()


def test_an_approved_parameter_download_without_the_table_keeps_the_table_in_use(
    tmp_path,
) -> None:
    """An 0810/360 approved without field 62 fails the chain: the table in use stays (the
    agent's own download and the app's alike)."""
    import asyncio

    from agent.journal import Journal
    from agent.session.downloads import DownloadFailed, Downloads
    from agent.wire.message import Message

    async def send(mti: str, code: str, field62: bytes | None) -> Message:
        return Message("0810", {39: "00", 60: f"00000000{code}"})

    async def nothing(*_: object) -> None:
        return None

    async def scenario() -> None:
        store = ParameterStore(tmp_path / "parameters.json")
        store.replace("terminal", {"values": {"retries": "3"}})
        journal = Journal(tmp_path / "journal.sqlite3")
        try:
            downloads = Downloads(send, store, journal, status=nothing, downloaded=nothing)
            with pytest.raises(DownloadFailed, match="approved without parameters"):
                await downloads.terminal_parameters()
            request = Message("0800", {11: "000001", 60: "00000000360"})
            await downloads.observe(request, await send("0800", "360", None))
            assert store.read()["terminal"]["values"] == {"retries": "3"}
        finally:
            journal.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b'{"terminal": 5}', "section 'terminal' has no 'values' dict"),
        (b'{"ic_parameters": {"at": 0}}', "section 'ic_parameters' has no 'aids' list"),
        (b'{"ca_keys": {"keys": [1]}}', "section 'ca_keys' has an item of 'keys' without"),
        (b'{"ca_keys": {"keys": [{"index": "01"}]}}', "without 'rid' and 'index'"),
        (b'{"ic_parameters": {"aids": [{"aid": "A0"}]}}', "without 'aid' and 'tags'"),
        (b'{"contactless": {"at": "now", "tags": {}}}', "has an 'at' that is not a time"),
        (b"\xff\xfe", "unreadable"),
    ],
)
def test_a_parameters_file_of_another_shape_is_damaged_and_named(tmp_path, content, named):
    """Valid JSON of another shape (or bytes that are not UTF-8) is as damaged as a file that is
    not JSON: a ValueError naming the file and the section, so the service sets it aside and
    ``agent params`` says so, instead of a traceback in each reader."""
    path = tmp_path / "parameters.json"
    path.write_bytes(content)
    store = ParameterStore(path)
    with pytest.raises(ValueError, match=r"parameters\.json") as raised:
        store.read()
    assert named in str(raised.value)
    assert store.in_use() == {} and not path.exists()  # set aside for a person


def test_an_sm2_ca_key_is_checked_by_sm3_and_needs_no_exponent() -> None:
    """DF06 names DF03's hash: SM3 (07) for a 国密 key, whose DF07 (04, SM2) leaves out the
    exponent; a hash the agent does not know refuses the key."""
    from agent.sim.host_downloads import sample_sm2_ca_key

    items = sample_sm2_ca_key(0x11)
    assert "DF04" not in dict(items)
    point = dict(items)["DF02"]
    expected = hashlib.new("sm3", RID + b"\x11" + point).digest()
    assert dict(items)["DF03"] == expected  # computed here independently of emv.ca_key
    assert emv.ca_key(items).index == "11"
    wrong = [(t, bytes(32) if t == "DF03" else v) for t, v in items]
    with pytest.raises(emv.DownloadDataError, match="is not its SM3"):
        emv.ca_key(wrong)
    unknown = [(t, b"\x09" if t == "DF06" else v) for t, v in items]
    with pytest.raises(emv.DownloadDataError, match="unknown hash algorithm DF06 09"):
        emv.ca_key(unknown)
    rsa_without_exponent = [(t, v) for t, v in sample_ca_key(1) if t != "DF04"]
    with pytest.raises(emv.DownloadDataError, match="lacks DF04"):
        emv.ca_key(rsa_without_exponent)
