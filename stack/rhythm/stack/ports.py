"""Small TCP port helpers for the local stack: pick free ports, probe and wait for them."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "free_ports", "port_open", "wait_for_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nobody listens on right now (the kernel picks it).

    The port is released before returning, so another process may take it before we bind it
    again: callers that start a server on it should retry with a new port on "address in use"
    (``LocalKafka.up`` does when its ports are automatic).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all held open together while choosing, so no duplicates)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    interval: float = 0.1,
    abort: Callable[[], bool] | None = None,
) -> bool:
    """Poll until ``host:port`` accepts connections (True), the deadline passes (False) or
    ``abort()`` returns True (False; e.g. the server process has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port, timeout=min(0.5, max(interval, 0.05))):
            return True
        if abort is not None and abort():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
