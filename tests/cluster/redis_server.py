"""Small helpers for a throwaway redis-server on 127.0.0.1 (tests/cluster/conftest.py)."""

from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (nothing listens there until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:`port` answers PING (raw RESP: no client needed)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False
