"""systemd's notify protocol (sd_notify(3)) without a dependency: one datagram of UTF-8
``KEY=value`` lines per call to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace). A STATUS line may hold any text, a Chinese cause included, and WATCHDOG=1 travels
with it. A send that fails is logged (once until one succeeds again), never raised: systemd's
bookkeeping must not take the service down, but a watchdog that is not fed must be seen."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Tells systemd about the service, when systemd gave a socket; silent otherwise."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace: a leading NUL byte on the wire
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() else 0.0
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def __call__(self, *lines: str) -> bool:
        """Send ``lines`` in one datagram; ``False`` if there is no socket or the send failed."""
        if self._socket is None:
            return False
        try:
            self._socket.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), exc)
            self._failing = True
            return False
        if self._failing:
            log.info("notifying systemd works again")
        self._failing = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
