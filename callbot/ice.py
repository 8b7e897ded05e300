"""ICE settings for calls, and the single hook into aioice that enforces them.

Why a hook at all: aioice 0.13 takes host candidates from the module-level function
`aioice.ice.get_host_addresses()`, which always drops 127.0.0.1 and has no per-connection
filter. callbot needs both: tests and CI run in a namespace that only has loopback, and
operators pin calls to chosen addresses. We replace that one function with `_host_addresses`,
which answers from a ContextVar set only while *this call's* candidates are gathered
(`gather_within`), so the filter is per call, nothing else in aioice or aiortc changes, and code
that never goes through `gather_within` sees aioice's usual answer plus the loopback fallback.

Also here: an explicit (possibly empty) ICE server list, because aiortc silently falls back to a
public Google STUN server when `iceServers` is None.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import os
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import aioice.ice
import ifaddr
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from .errors import CallError

ENV_ADDRESSES = "CALLBOT_ICE_ADDRESSES"

T = TypeVar("T")

_allowed: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "callbot_ice_addresses", default=None
)


@dataclass(frozen=True)
class IceConfig:
    """Where a call may gather candidates: STUN/TURN servers and a host-address filter.

    `addresses=None` means every non-loopback address, or loopback when that is all the host has.
    """

    servers: tuple[RTCIceServer, ...] = ()
    addresses: tuple[str, ...] | None = None
    relay_only: bool = False

    @classmethod
    def from_env(
        cls,
        addresses: Iterable[str] | None = None,
        servers: Iterable[RTCIceServer] = (),
        relay_only: bool = False,
    ) -> IceConfig:
        """Build a config; without explicit `addresses`, read `CALLBOT_ICE_ADDRESSES`."""
        if addresses is None:
            raw = os.environ.get(ENV_ADDRESSES, "")
            addresses = [a.strip() for a in raw.split(",") if a.strip()] or None
        chosen = None if addresses is None else tuple(addresses)
        for address in chosen or ():
            ipaddress.ip_address(address)  # ValueError names the bad entry
        return cls(servers=tuple(servers), addresses=chosen, relay_only=relay_only)

    def rtc_configuration(self) -> RTCConfiguration:
        """The aiortc configuration: always an explicit server list, never aiortc's default."""
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        return RTCConfiguration(iceServers=list(self.servers), iceTransportPolicy=policy)


def interface_addresses() -> list[str]:
    """Every usable address of this host, loopback included (IPv6 link-local left out)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(ip.ip)
            elif ip.ip[2] == 0:  # IPv6 with a scope id is link-local: unusable without it
                found.append(ip.ip[0])
    return found


def select_addresses(available: Iterable[str], allowed: Iterable[str] | None) -> list[str]:
    """The host addresses a call may use: `allowed` if given, else non-loopback, else loopback."""
    available = list(dict.fromkeys(available))
    if allowed is not None:
        allowed_set = set(allowed)
        return [a for a in available if a in allowed_set]
    public = [a for a in available if not ipaddress.ip_address(a).is_loopback]
    return public or [a for a in available if ipaddress.ip_address(a).is_loopback]


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Drop-in for `aioice.ice.get_host_addresses` that honours the gathering call's filter."""
    chosen = select_addresses(interface_addresses(), _allowed.get())
    return [a for a in chosen if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]


aioice.ice.get_host_addresses = _host_addresses


async def gather_within(config: IceConfig, gathering: Awaitable[T]) -> T:
    """Await `gathering` (e.g. `setLocalDescription`) with host candidates limited by `config`."""
    if not config.relay_only and not select_addresses(interface_addresses(), config.addresses):
        if asyncio.iscoroutine(gathering):
            gathering.close()
        raise CallError(
            "no_ice_address",
            f"none of the ICE addresses {list(config.addresses or ())} is on this host "
            f"(it has {interface_addresses()}); check --ice-address / {ENV_ADDRESSES}",
        )
    context = contextvars.copy_context()
    context.run(_allowed.set, config.addresses)

    async def run() -> T:
        return await gathering

    return await asyncio.create_task(run(), context=context)
