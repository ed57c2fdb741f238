"""The other doors hostile input comes through: the configuration loader, the control-socket
protocol and the serial framer. Each raises only its own error, naming what was wrong.

A short run is part of the normal suite; POS_AGENT_FUZZ=long runs each target 20,000 times.
"""

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from agent.config import PARSERS, ConfigError, build, load
from agent.service.control import ControlServer, parse_request
from drivers.framing import MAX_LEN, BadFrame, Control, Frame, FrameParser
from tests.property.test_decode_fuzz import fuzz

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
    st.sampled_from(["127.0.0.1:0", "host:70000", "[::1]:5000", "0003", "zz", "10000001",
                     "898100012340001", "http://x", "-1", "1e309"]),
)  # fmt: skip
sections = st.sampled_from([*PARSERS, "bogus"])
keys = st.one_of(
    st.sampled_from([k for keys in PARSERS.values() for k in keys]), st.text(max_size=8)
)
raw_configs = st.dictionaries(
    sections,
    st.one_of(st.dictionaries(keys, st.one_of(scalars, st.lists(scalars, max_size=2))), scalars),
    max_size=6,
)


@fuzz
@given(raw=raw_configs)
def test_any_parsed_toml_gives_a_config_or_a_config_error(raw) -> None:
    try:
        build(raw, "fuzz.toml", env={})
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")


@fuzz
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode(
    "latin-1"))))  # fmt: skip
def test_any_file_gives_a_config_or_a_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load(path, env={})
    except ConfigError as exc:
        assert str(exc).startswith(str(path))


requests = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda value: json.dumps(value).encode(), st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["cmd", "only", "since", "x"]), inner, max_size=3), max_leaves=8)),
)  # fmt: skip


@fuzz
@given(line=requests)
def test_any_control_line_is_a_request_or_a_value_error(line: bytes) -> None:
    try:
        request = parse_request(line)
    except ValueError as exc:
        assert str(exc)
    else:
        assert isinstance(request["cmd"], str)


@fuzz
@given(line=requests)
def test_the_control_server_answers_anything_without_raising(line: bytes) -> None:
    async def echo(request):
        if "only" in request and not isinstance(request["only"], list):
            raise ValueError('"only" must be a list')
        return {"echo": request["cmd"]}

    answer = asyncio.run(ControlServer({"status": echo}).answer(line))
    assert set(answer) >= {"ok"} and (answer["ok"] or answer["error"])
    json.dumps(answer)  # always sendable


@fuzz
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_the_serial_framer_takes_any_bytes(chunks) -> None:
    parser = FrameParser()
    for chunk in chunks:
        for event in [*parser.feed(chunk), *parser.expire()]:
            assert isinstance(event, Frame | Control | BadFrame)
            if isinstance(event, Frame):
                assert len(event.data) + 2 <= MAX_LEN
