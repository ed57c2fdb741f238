"""The host link's transport: TLS with a pinned CA, and the idle echo test, against the host
simulator over real sockets."""

import asyncio

import pytest

from agent.host.link import HostUnavailable
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


def signed_by_another_ca(folder):
    """A certificate with the right name from a CA that is not the pinned one."""
    pinned = make_server(folder / "pinned", SERVER_NAME)
    return pinned.ca, make_server(folder / "served", SERVER_NAME, ca_name="someone else's CA")


def made_for_another_name(folder):
    """A certificate from the pinned CA, for another host name."""
    served = make_server(folder / "served", "other-host.test")
    return served.ca, served


@pytest.mark.parametrize(
    ("certificates", "reason"),
    [(signed_by_another_ca, "CERTIFICATE_VERIFY_FAILED"), (made_for_another_name, "Hostname")],
    ids=["another-ca", "another-name"],
)
def test_tls_refuses_a_host_it_cannot_trust(tmp_path, certificates, reason: str) -> None:
    """Only the pinned CA is trusted, and only for the configured name: such a host is never
    sent a byte of a transaction."""
    pinned_ca, served = certificates(tmp_path / "pki")

    async def scenario():
        async with gateway_rig(
            tmp_path,
            host_options={"tls": True, "ca_file": str(pinned_ca), "server_name": SERVER_NAME},
            server_tls=server_tls(served.cert, served.key),
            sign_in=False,
        ) as rig:
            with pytest.raises(HostUnavailable, match=reason):
                await rig.agent.sender.sign_in()
            response = await exchange(rig.socket, app_purchase(1200))
            assert response.text(39) == "96"
            assert rig.host.state()["requests"] == {}
            assert rig.agent.journal.queued_reversals() == []

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


def test_an_echo_test_the_journal_cannot_number_is_tried_again_later(tmp_path) -> None:
    """A full disk fails the echo's STAN: that echo is not sent, the next idle period's is
    (the echo task went on; it ended for good, the keepalive lost until a restart)."""
    from agent.journal import JournalError

    async def scenario():
        async with gateway_rig(tmp_path, host_options={"idle_echo": 0.2}) as rig:
            make_echo, failures = rig.agent.link.make_echo, []

            async def full_disk_once():
                if not failures:
                    failures.append(1)
                    raise JournalError("journal write failed: database or disk is full")
                return await make_echo()

            rig.agent.link.make_echo = full_disk_once
            await asyncio.sleep(1.0)
            assert failures == [1]
            assert rig.host.state()["requests"].get("0820", 0) >= 1

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
