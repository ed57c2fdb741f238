from pathlib import Path

import pytest

from agent.config import ConfigError, Endpoint, load

GOOD = """
[terminal]
tid = "10000001"
mid = "898100012340001"

[host]
primary = "127.0.0.1:5000"
backup = "[::1]:5001"
response_timeout = 10

[wire]
tpdu_destination = "0105"
key_scheme = "004"

[gateway]
mode = "pass-through"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file(tmp_path) -> None:
    config = load(write(tmp_path, GOOD), env={})
    assert config.terminal.tid == "10000001"
    assert config.endpoints == [Endpoint("127.0.0.1", 5000), Endpoint("::1", 5001)]
    assert config.host.response_timeout == 10.0
    assert config.wire.tpdu_destination == 0x0105 and config.wire.key_scheme == "004"
    assert config.gateway.mode == "pass-through"
    assert config.module.url == "/dev/ttyS1"  # default


def test_wire_settings_of_real_acquirers(tmp_path) -> None:
    text = "[wire]\nheader_category = '61'\nkey_scheme = '004'\nkey_layout = 7\n"
    wire = load(write(tmp_path, text), env={}).wire
    assert (wire.header_category, wire.key_scheme, wire.key_layout) == (0x61, "004", 7)
    assert load(write(tmp_path, "[wire]\nkey_layout = 'auto'"), env={}).wire.key_layout == 0
    env = {"POS_AGENT_WIRE_KEY_LAYOUT": "4"}
    assert load(write(tmp_path, ""), env=env).wire.key_layout == 4


def test_key_scheme_is_negotiated_unless_a_scheme_or_a_layout_fixes_it(tmp_path) -> None:
    """DESIGN.md section 4: "auto" by default; a layout belongs to one scheme, so a layout
    configured with "auto" makes its scheme the only one used."""
    assert load(write(tmp_path, ""), env={}).wire.key_scheme == "auto"
    wire = load(write(tmp_path, "[wire]\nkey_layout = 5"), env={}).wire
    assert (wire.key_scheme, wire.key_layout) == ("004", 5)
    text = "[wire]\nkey_scheme = 'auto'\nkey_layout = 4"
    assert load(write(tmp_path, text), env={}).wire.key_scheme == "003"
    env = {"POS_AGENT_WIRE_KEY_SCHEME": "004"}
    assert load(write(tmp_path, ""), env=env).wire.key_scheme == "004"


def test_environment_overrides(tmp_path) -> None:
    env = {"POS_AGENT_HOST_PRIMARY": "10.1.1.1:6000", "POS_AGENT_TERMINAL_TID": "20000002"}
    config = load(write(tmp_path, GOOD), env=env)
    assert config.host.primary == Endpoint("10.1.1.1", 6000)
    assert config.terminal.tid == "20000002"


def test_missing_default_file_is_an_unprovisioned_terminal(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("agent.config.DEFAULT_PATH", tmp_path / "absent.toml")
    config = load(env={})
    assert config.terminal.tid == "" and config.endpoints == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[host]\nprimary = 'nowhere'", "host.primary = 'nowhere': expected HOST:PORT"),
        ("[host]\nprimary = 'h:70000'", "port from 1 to 65535"),
        ("[terminal]\ntid = '123'", "terminal.tid = '123': expected 8 printable ASCII"),
        ("[terminal]\nmid = 5", "terminal.mid = 5: expected a string"),
        ("[wire]\nkey_scheme = '002'", "wire.key_scheme = '002': expected one of '001', '003'"),
        ("[wire]\ntpdu_source = 'xyz1'", "expected 4 hex digits"),
        ("[host]\nresponse_timeout = -1", "host.response_timeout = -1: expected a number"),
        ("[host]\ntls = 'maybe'", "host.tls = 'maybe': expected true or false"),
        ("[hosts]\nprimary = 'a:1'", "unknown section [hosts]"),
        ("[host]\nprimry = 'a:1'", "unknown key host.primry"),
        ("host = 5", "[host] must be a table"),
        ("[host\n", "not valid TOML"),
        ("[host]\ntls = true\nca_file = '/nonexistent/ca.pem'", "host.ca_file"),
        ("[wire]\nkey_layout = 9", 'wire.key_layout = 9: expected "auto" or a field 62 layout'),
        ("[wire]\nkey_layout = 'four'", "wire.key_layout = 'four': expected"),
        ("[wire]\nsm_pin_field = '63'", "wire.sm_pin_field = '63': expected one of '59', '62'"),
        (
            "[wire]\nkey_scheme = '003'\nkey_layout = 5",
            "wire.key_layout = 5: layout 5 (scheme 004, 52 bytes",
        ),
        ("[wire]\nkey_scheme = '001'\nkey_layout = 2", "does not fit wire.key_scheme = '001'"),
        ("[wire]\nheader_category = '6'", "wire.header_category = '6': expected 2 hex digits"),
        ("[wire]\nprofile = ''", "wire.profile = '': expected the path of a wire profile"),
        ("[wire]\nprofile = 'absent.toml'", "wire.profile: "),
        # what `agent run` would refuse or crash on, `agent config check` refuses the same way
        ("[gateway]\ntcp_port = 70000", "gateway.tcp_port = 70000: expected a whole number from 0"),
        ("[hooks]\ntimeout = 0", "hooks.timeout = 0: expected seconds above 0"),
        ("[host]\nresponse_timeout = inf", "host.response_timeout = inf: expected a number"),
        ("[host]\nconnect_timeout = nan", "host.connect_timeout = nan: expected a number"),
        (
            "[module]\nkey_slot = 300",
            "module.key_slot = 300: expected a whole number from 0 to 255",
        ),
        ("[reversal]\nattempts = 0", "reversal.attempts = 0: expected a whole number from 1"),
        ("[session]\nattempts = 0", "session.attempts = 0: expected a whole number from 1"),
        ("[module]\nbaudrate = 0", "module.baudrate = 0: expected a whole number from 50"),
        ("[gateway]\ncpu = -1", 'gateway.cpu = -1: expected "last", "any" or a CPU number'),
        ("[gateway]\ncpu = 'first'", 'gateway.cpu = \'first\': expected "last", "any"'),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("value", "setting"), [("'last'", "last"), ("'any'", "any"), ("3", "3"), ("'3'", "3")]
)
def test_the_gateway_cpu_is_last_any_or_a_number(tmp_path, value: str, setting: str) -> None:
    assert load(write(tmp_path, ""), env={}).gateway.cpu == "last"
    assert load(write(tmp_path, f"[gateway]\ncpu = {value}"), env={}).gateway.cpu == setting


def test_bad_environment_override_is_named(tmp_path) -> None:
    """The variable is blamed, not the file (whose own value may be good)."""
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, GOOD), env={"POS_AGENT_GATEWAY_TCP_PORT": "abc"})
    assert str(caught.value) == (
        "environment POS_AGENT_GATEWAY_TCP_PORT: gateway.tcp_port = 'abc': expected a whole "
        "number of 0 or more"
    )


def test_named_file_must_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load(tmp_path / "absent.toml", env={})


def test_undecodable_file(tmp_path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ConfigError, match="cannot be read"):
        load(path, env={})


def test_a_reversal_pause_over_the_cap_is_taken_as_the_cap(caplog) -> None:
    """DESIGN.md section 8 caps the reversal back-off at 10 minutes: a longer
    reversal.retry_max (valid in earlier releases) is 600 with a warning, not a refusal that
    would keep an upgraded terminal from starting."""
    from agent.config import build

    with caplog.at_level("WARNING", logger="agent.config"):
        config = build({"reversal": {"retry_max": 1800}}, "test", env={})
    assert config.reversal.retry_max == 600
    assert "reversal.retry_max = 1800: the back-off is capped at 600 s" in caplog.text
    assert build({"reversal": {"retry_max": 90}}, "test", env={}).reversal.retry_max == 90
