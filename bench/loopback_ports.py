"""Free loopback ports for the bench scripts (the tests have ``conftest.free_tcp_port``).

The scripts run as ``python bench/NAME.py``, so this folder is on ``sys.path`` and they import it by name.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_endpoints() -> tuple[str, str]:
    """An (observation, command) pair of ``tcp://127.0.0.1`` endpoints on free ports."""
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
