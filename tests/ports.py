"""Free TCP ports for throw-away stacks and receivers: the tests' and the benchmarks' one helper
(standard library only, so `python -m bench` needs nothing of the test extra)."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
