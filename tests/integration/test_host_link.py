"""The host link's transport: TLS with a pinned CA, and the idle echo test, against the host
simulator over real sockets."""

import asyncio

from agent.link import HostUnavailable
from agent.sim.host_server import server_tls
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig
from tests.tls_certs import make_server

SERVER_NAME = "acquirer.test"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_tls_with_the_pinned_ca_signs_in_and_approves(tmp_path) -> None:
    files = make_server(tmp_path / "pki", SERVER_NAME)

    async def scenario():
        async with gateway_rig(
            tmp_path,
            host_options={"tls": True, "ca_file": str(files.ca), "server_name": SERVER_NAME},
            server_tls=server_tls(files.cert, files.key),
        ) as rig:
            response = await exchange(rig.socket, app_purchase(1200))
            assert response.text(39) == "00"
            assert rig.host.state()["requests"] == {"0800": 1, "0200": 1}

    run(scenario())


def test_tls_refuses_a_host_signed_by_another_ca(tmp_path) -> None:
    """The pinned CA is the only one trusted: a server whose certificate another CA signed (even
    with the right name) is never sent a byte of a transaction."""
    pinned = make_server(tmp_path / "pinned", SERVER_NAME)
    impostor = make_server(tmp_path / "impostor", SERVER_NAME, ca_name="someone else's CA")

    async def scenario():
        async with gateway_rig(
            tmp_path,
            host_options={"tls": True, "ca_file": str(pinned.ca), "server_name": SERVER_NAME},
            server_tls=server_tls(impostor.cert, impostor.key),
            sign_in=False,
        ) as rig:
            try:
                await rig.agent.gateway.sign_in()
            except HostUnavailable as exc:
                assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
            else:
                raise AssertionError("sign-in went through to an unpinned host")
            response = await exchange(rig.socket, app_purchase(1200))
            assert response.text(39) == "96"
            assert rig.host.state()["requests"] == {}
            assert rig.agent.journal.queued_reversals() == []

    run(scenario())


def test_tls_refuses_a_certificate_for_another_name(tmp_path) -> None:
    files = make_server(tmp_path / "pki", "other-host.test")

    async def scenario():
        async with gateway_rig(
            tmp_path,
            host_options={"tls": True, "ca_file": str(files.ca), "server_name": SERVER_NAME},
            server_tls=server_tls(files.cert, files.key),
            sign_in=False,
        ) as rig:
            try:
                await rig.agent.gateway.sign_in()
            except HostUnavailable as exc:
                assert "hostname mismatch" in str(exc).lower() or "doesn't match" in str(exc)
            else:
                raise AssertionError("sign-in went through to a host with the wrong name")

    run(scenario())


def test_idle_connection_is_kept_alive_with_echo_tests(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, host_options={"idle_echo": 0.2}) as rig:
            await asyncio.sleep(0.9)
            echoes = rig.host.state()["requests"].get("0820", 0)
            assert 2 <= echoes <= 5  # one per idle period, not a flood
            assert rig.agent.link.status.connected
            # traffic postpones the next echo: none while purchases keep the line busy
            before = rig.host.state()["requests"].get("0820", 0)
            for _ in range(6):
                await exchange(rig.socket, app_purchase(1000))
                await asyncio.sleep(0.05)
            assert rig.host.state()["requests"].get("0820", 0) - before <= 1

    run(scenario())


def test_echo_without_answer_drops_the_connection_and_the_next_purchase_reconnects(
    tmp_path,
) -> None:
    async def scenario():
        async with gateway_rig(
            tmp_path, host_options={"idle_echo": 0.2}, response_timeout=0.3
        ) as rig:
            rig.server.faults.add("no-answer")
            await asyncio.sleep(0.8)
            assert "echo test failed" in rig.agent.link.status.last_error
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"

    run(scenario())
