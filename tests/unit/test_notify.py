"""The sd_notify client against a real datagram socket standing in for systemd's."""

import logging
import socket

from agent.service.notify import Notifier


def _listener(address: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(5)
    return listener


def test_a_chinese_status_travels_whole_with_the_watchdog(tmp_path) -> None:
    path = str(tmp_path / "notify")
    with _listener(path) as listener:
        notify = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
        assert notify.watchdog_interval == 15.0
        assert notify("WATCHDOG=1", "STATUS=未登记：终端号不符 (TID mismatch)")
        datagram = listener.recv(4096).decode("utf-8")
        notify.close()
    assert datagram == "WATCHDOG=1\nSTATUS=未登记：终端号不符 (TID mismatch)"


def test_an_abstract_socket_is_reached(tmp_path) -> None:
    name = f"pos-agent-test-{tmp_path.name}"
    with _listener("\0" + name) as listener:
        notify = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notify("READY=1")
        assert listener.recv(64) == b"READY=1"
        notify.close()


def test_a_failed_send_is_logged_once_and_never_raised(tmp_path, caplog) -> None:
    notify = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING):
        assert not notify("WATCHDOG=1")
        assert not notify("WATCHDOG=1")
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1
    assert "nobody-listens" in warnings[0].getMessage()
    notify.close()


def test_without_systemd_it_is_silent() -> None:
    notify = Notifier({})
    assert not notify.enabled
    assert not notify("READY=1")
    assert notify.watchdog_interval == 0.0
