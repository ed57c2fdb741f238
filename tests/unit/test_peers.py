"""Who is at the other end of a loopback TCP connection: the kernel's socket table, read the
way it is laid out (addresses in host byte order), where only the one established row whose ends
are exactly ours swapped counts. A TIME_WAIT row (owned by no one: uid 0) with the same ports
but another address must never make a stranger root."""

import socket
import struct

from agent.transaction import peers

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def _proc(address: str, port: int) -> str:
    return f"{struct.unpack('=I', socket.inet_aton(address))[0]:08X}:{port:04X}"


def _row(local: tuple[str, int], remote: tuple[str, int], state: str, uid: int) -> str:
    return (
        f"   0: {_proc(*local)} {_proc(*remote)} {state} 00000000:00000000 00:00000000 "
        f"00000000 {uid:5d}        0 12345 1 0000000000000000 20 4 30 10 -1\n"
    )


def test_only_the_established_row_with_our_ends_counts(tmp_path, monkeypatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        ours, theirs = accepted.getsockname(), accepted.getpeername()
        table = tmp_path / "tcp"
        monkeypatch.setattr(peers, "_TCP_TABLES", (table,))
        # an attacker's leftover: same ports, another address, TIME_WAIT (06), uid 0
        decoy = _row(("127.0.0.3", theirs[1]), ours, "06", 0)
        real = _row(theirs, ours, "01", 65534)
        table.write_text(HEADER + decoy + real)
        assert peers.tcp_peer(accepted) == peers.Peer(65534, frozenset())
        table.write_text(HEADER + decoy)  # only the decoy: nobody known, refused
        assert peers.tcp_peer(accepted) is None
        table.write_text(HEADER + _row(("127.0.0.3", theirs[1]), ours, "01", 0))
        assert peers.tcp_peer(accepted) is None  # same ports, another address: not ours
        accepted.close()
        client.close()


def test_the_real_table_knows_our_own_connection() -> None:
    import os

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        assert peers.tcp_peer(accepted) == peers.Peer(os.geteuid(), frozenset())
        accepted.close()
        client.close()


def test_a_unix_peers_supplementary_groups_come_from_the_socket_not_proc(monkeypatch) -> None:
    """A payment app given the service's group by its unit's ``SupplementaryGroups=`` (not
    in /etc/group) while the agent's unit hides other processes (``ProtectProc=invisible``):
    the groups come from SO_PEERGROUPS. A real process of another user connects."""
    import os
    import pathlib
    import subprocess

    # the system's interpreter: another user cannot reach the test's virtual environment
    python = "/usr/bin/python3"  # Debian's python3; .ci/run installs it
    # an abstract address: no directory of the test's stands in the other user's way
    address = f"\0pos-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(address)
        server.listen()
        server.settimeout(10)
        app = subprocess.Popen(
            [python, "-c",
             f"import socket,time; s=socket.socket(socket.AF_UNIX); s.connect({address!r}); "
             "time.sleep(5)"],
            user=65534, group=65534, extra_groups=[4242],
        )  # fmt: skip
        try:
            accepted, _ = server.accept()
            reading = pathlib.Path.read_text

            def hidden(self, *args, **kwargs):
                if str(self).startswith("/proc/"):
                    raise PermissionError(13, "Permission denied (ProtectProc=invisible)")
                return reading(self, *args, **kwargs)

            monkeypatch.setattr(pathlib.Path, "read_text", hidden)
            peer = peers.unix_peer(accepted)
            accepted.close()
        finally:
            app.kill()
            app.wait()
    assert peer is not None and peer.uid == 65534
    assert {65534, 4242} <= peer.groups
