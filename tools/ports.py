"""Free localhost TCP ports, for clusters of processes on one machine (tests, benchmarks)."""

import socket


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (all held open while choosing, so none repeats).

    Another process may still take one before it is used: fine for tests and
    benchmarks on a machine of their own.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
