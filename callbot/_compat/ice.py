"""aioice internals behind plain functions: the ICE connection's datagram input, its
nominated pair, its check list, and the module-level host-address function.

Upstream hook: aioice has no per-connection host-address filter. It is asked for in
https://github.com/aiortc/aioice/issues/2 (open since 2018) and
https://github.com/aiortc/aioice/pull/57 (open; the maintainer suggested a
`filter_host_addresses` callable instead); until one lands, `install_host_addresses` replaces
`aioice.ice.get_host_addresses`, the function aioice calls while gathering.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import aioice.ice
from aioice.ice import StunProtocol

HostAddresses = Callable[[bool, bool], list[str]]


def send_on_nominated(connection: Any, data: bytes) -> None:
    """Send a datagram on the connection's nominated pair (component 1), as
    `Connection.sendto` would without awaiting; ConnectionError when there is none."""
    pair = connection._nominated.get(1)
    if pair is None or not isinstance(pair.protocol, StunProtocol):
        raise ConnectionError("no ICE pair to send on")
    pair.protocol.transport.sendto(data, pair.remote_addr)


def demux_media_first(connection: Any) -> None:
    """Have the nominated pair's socket hand RTP/RTCP straight to the connection: aioice tries
    every datagram as STUN first, an exception raised and caught per media packet. RFC 7983
    section 7 tells them apart by the first byte (128-191: RTP/RTCP; STUN starts with 0-3),
    https://www.rfc-editor.org/rfc/rfc7983#section-7; anything else takes aioice's way."""
    pair = connection._nominated.get(1)
    if pair is None or not isinstance(pair.protocol, StunProtocol):
        return
    protocol: Any = pair.protocol
    if protocol.__dict__.get("_callbot_tapped"):
        return  # an impaired call (tap_datagrams): every datagram must go through the tap
    component = protocol.local_candidate.component
    stun_first = weakref.WeakMethod(protocol.datagram_received)  # no cycle through the hook

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 127 < data[0] < 192:
            connection.data_received(data, component)
            return
        original = stun_first()
        if original is not None:
            original(data, addr)

    protocol.datagram_received = datagram_received


def input_queue(connection: Any) -> asyncio.Queue[Any]:
    """Where the connection queues received datagrams for `recv()` (aiortc's reader)."""
    return connection._queue  # type: ignore[no-any-return]


def replace_data_received(connection: Any, handler: Callable[[bytes, int], None]) -> None:
    """Have aioice call `handler(data, component)` for every datagram the connection gets."""
    connection.data_received = handler


def clear_check_list(connection: Any) -> None:
    """Drop the candidate pairs (pairs -> STUN protocols -> the connection: a cycle)."""
    connection._check_list.clear()


def host_addresses_installed(function: HostAddresses) -> bool:
    return aioice.ice.get_host_addresses is function


def install_host_addresses(function: HostAddresses) -> None:
    """Make `function(use_ipv4, use_ipv6)` the host-address source of aioice's gathering."""
    aioice.ice.get_host_addresses = function  # type: ignore[assignment]


#: `tap(data, deliver)`: called for each datagram; calls `deliver()` (now, later or never).
DatagramTap = Callable[[bytes, Callable[[], None]], None]


class _TappedTransport:
    """A datagram transport whose `sendto` goes through a tap first; the rest is the real one."""

    def __init__(self, transport: Any, tap: DatagramTap) -> None:
        self._transport = transport
        self._tap = tap

    def sendto(self, data: bytes, addr: Any = None) -> None:
        transport = self._transport
        self._tap(data, lambda: None if transport.is_closing() else transport.sendto(data, addr))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def tap_datagrams(connection: Any, outgoing: DatagramTap, incoming: DatagramTap) -> int:
    """Pass every datagram the connection's sockets send through `outgoing` and every one
    they receive through `incoming` (both before STUN/DTLS/SRTP see them). Returns how many
    sockets were tapped; each is tapped once."""
    tapped = 0
    for protocol in list(connection._protocols):
        state = protocol.__dict__
        if state.get("_callbot_tapped") or getattr(protocol, "transport", None) is None:
            continue
        state["_callbot_tapped"] = True
        protocol.transport = _TappedTransport(protocol.transport, outgoing)
        received = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any, received: Any = received) -> None:
            incoming(data, lambda: received(data, addr))

        protocol.datagram_received = datagram_received
        tapped += 1
    return tapped
