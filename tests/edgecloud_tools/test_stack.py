"""``free_port``: ports for servers that bind later, out of reach of outgoing connections."""

from __future__ import annotations

import socket

from edgecloud_tools import stack
from edgecloud_tools.stack import PORTS_FROM, ephemeral_port_range, free_port


def test_ports_come_from_below_the_ephemeral_range_bindable_and_never_twice():
    low, _ = ephemeral_port_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(PORTS_FROM <= port < low for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # really free


def test_a_port_in_use_is_skipped(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(stack, "ephemeral_port_range", lambda: (busy + 1, 60999))
        picks = iter([busy, *range(busy - 1, busy - 100, -1)])
        monkeypatch.setattr(stack._choose, "randrange", lambda start, stop: next(picks))
        port = free_port()
        assert port != busy and busy - 100 < port < busy


def test_with_no_room_below_the_range_the_os_chooses(monkeypatch):
    monkeypatch.setattr(stack, "ephemeral_port_range", lambda: (PORTS_FROM + 10, 60999))
    port = free_port()
    assert port >= PORTS_FROM + 10  # bind(0) gives one from the (real) ephemeral range
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
