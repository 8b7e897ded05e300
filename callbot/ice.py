"""ICE settings for calls, and the single hook into aioice that enforces them.

Why a hook at all: aioice 0.13 takes host candidates from the module-level function
`aioice.ice.get_host_addresses()`, which always drops 127.0.0.1 and has no per-connection
filter (requested upstream, see callbot/_compat/ice.py). callbot needs both: tests and CI run
in a namespace that only has loopback, and operators pin calls to chosen addresses.
`callbot._compat` replaces that one function with `_host_addresses` when the first bot or call
is created (not at import), and `_host_addresses` answers from a ContextVar set only while
*this call's* candidates are gathered (`gather_within`), so the filter is per call, nothing else
in aioice or aiortc changes, and code that never goes through `gather_within` sees aioice's
usual answer plus the loopback fallback.

Also here: an explicit (possibly empty) ICE server list, because aiortc silently falls back to a
public Google STUN server when `iceServers` is None; and, for relay-only calls, the diagnosis of a
TURN server that gave no relay candidate (`check_relay_candidates`), because aioice then only
logs and the call would just hang until its connect timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aioice.stun
import aioice.turn
import ifaddr
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from aiortc.rtcicetransport import connection_kwargs

from . import _compat
from .errors import CallError
from .safe import get_logger

#: How long the diagnostic TURN allocation may take before the server counts as unreachable.
PROBE_TIMEOUT = 3.0

logger = get_logger(__name__)

T = TypeVar("T")

_allowed: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "callbot_ice_addresses", default=None
)


@dataclass(frozen=True)
class IceConfig:
    """Where a call may gather candidates: STUN/TURN servers and a host-address filter.

    `addresses=None` means every non-loopback address, or loopback when that is all the host has.
    `relay_only` gathers TURN relay candidates only, so the peer never learns a host address.
    """

    servers: tuple[RTCIceServer, ...] = ()
    addresses: tuple[str, ...] | None = None
    relay_only: bool = False

    def __post_init__(self) -> None:
        if self.addresses is not None:
            addresses = tuple(self.addresses)
            for address in addresses:
                ipaddress.ip_address(address)  # ValueError names the bad entry
            object.__setattr__(self, "addresses", addresses)

    def rtc_configuration(self) -> RTCConfiguration:
        """The aiortc configuration: always an explicit server list, never aiortc's default."""
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        # max-bundle: one ICE/DTLS transport for audio, video and data (one TURN allocation,
        # one socket, one DTLS handshake per call instead of one per media line)
        return RTCConfiguration(
            iceServers=list(self.servers),
            iceTransportPolicy=policy,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )


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


_compat.provide_host_addresses(_host_addresses)


async def gather_within(config: IceConfig, gathering: Awaitable[T]) -> T:
    """Await `gathering` (e.g. `setLocalDescription`) with host candidates limited by `config`;
    a config that can gather nothing fails at once (`no_ice_address`, `no_turn_server`)."""
    _compat.ensure_patched()
    error = None
    if config.relay_only and _turn_server(config) is None:
        error = CallError(
            "no_turn_server",
            "relay-only ICE (always_relay) needs a TURN server, and none is configured "
            "(callbot serve --turn-url ... --turn-secret ..., see docs/howto/turn.md)",
        )
    elif not config.relay_only and not select_addresses(interface_addresses(), config.addresses):
        error = CallError(
            "no_ice_address",
            f"none of the ICE addresses {list(config.addresses or ())} is on this host "
            f"(it has {interface_addresses()}); check --ice-address / CALLBOT_ICE_ADDRESSES",
        )
    if error is not None:
        if asyncio.iscoroutine(gathering):
            gathering.close()
        raise error
    context = contextvars.copy_context()
    context.run(_allowed.set, config.addresses)

    async def run() -> T:
        return await gathering

    return await asyncio.create_task(run(), context=context)


# -- TURN diagnosis ---------------------------------------------------------------------------
#
# When aioice cannot allocate on the TURN server (wrong or expired credentials, server down) it
# logs at INFO and gathers no relay candidate; a relay-only call then has no candidate at all and
# would only end at its connect timeout. So after gathering, a relay-only call without a relay
# candidate allocates once more, with aioice's own TURN client, just to learn why, and fails at
# once with that reason. The aioice/aiortc internals this relies on, all here:
# - aiortc.rtcicetransport.connection_kwargs: which TURN server and credentials aiortc hands to
#   aioice (it uses only the first usable TURN URL);
# - aioice.turn.create_turn_endpoint: an allocation, as aioice makes it for a relay candidate;
# - aioice.stun.TransactionFailed (an error response, with its ERROR-CODE) and
#   aioice.stun.TransactionTimeout (no response).


def _turn_server(config: IceConfig) -> dict[str, Any] | None:
    """aioice's TURN arguments for `config` (turn_server, turn_username...), or None if aiortc
    would use no TURN server."""
    try:
        kwargs = connection_kwargs(list(config.servers))
    except ValueError:  # a malformed URL: aiortc itself reports it when gathering
        return None
    return kwargs if "turn_server" in kwargs else None


def _turn_name(turn: dict[str, Any]) -> str:
    host, port = turn["turn_server"]
    scheme = "turns" if turn["turn_ssl"] else "turn"
    return f"{scheme}:{host}:{port}?transport={turn['turn_transport']}"


def has_relay_candidate(sdp: str) -> bool:
    """Whether a session description carries a TURN relay candidate."""
    return re.search(r"^a=candidate:\S+ \d+ \S+ \d+ \S+ \d+ typ relay\b", sdp, re.M) is not None


async def check_relay_candidates(config: IceConfig, sdp: str) -> None:
    """After gathering `sdp` with `config`: if the TURN server gave no relay candidate, raise why
    for a relay-only call (`turn_auth_failed`, `turn_unreachable`, `turn_refused`, within
    PROBE_TIMEOUT), or log it for a call that can still use its host candidates."""
    turn = _turn_server(config)
    if turn is None or has_relay_candidate(sdp):
        return
    if config.relay_only:
        raise await probe_turn(turn)
    logger.warning("no relay candidate from TURN server %s: host candidates only", _turn_name(turn))


async def probe_turn(turn: dict[str, Any]) -> CallError:
    """Allocate on the TURN server described by `turn` (aioice's arguments) and return the
    CallError that explains why gathering got no relay candidate from it."""
    name, username = _turn_name(turn), turn["turn_username"]
    try:
        transport, _ = await asyncio.wait_for(
            aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=turn["turn_server"],
                username=username,
                password=turn["turn_password"],
                ssl=turn["turn_ssl"],
                transport=turn["turn_transport"],
            ),
            PROBE_TIMEOUT,
        )
    except aioice.stun.TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "no error code"))
        if code in (401, 441):  # Unauthorized (after sending credentials), Wrong Credentials
            return CallError(
                "turn_auth_failed",
                f"the TURN server {name} refused the credentials of {username!r} ({code} "
                f"{reason}): the relay's TURN secret differs from the server's "
                "static-auth-secret, the credentials expired, or the clocks disagree",
            )
        return CallError(
            "turn_refused", f"the TURN server {name} refused an allocation ({code} {reason})"
        )
    except (TimeoutError, aioice.stun.TransactionTimeout):
        return CallError(
            "turn_unreachable", f"the TURN server {name} did not answer in {PROBE_TIMEOUT:g} s"
        )
    except OSError as exc:  # connection refused (TCP), no such host...
        return CallError("turn_unreachable", f"cannot reach the TURN server {name}: {exc}")
    transport.close()  # deletes the allocation
    return CallError(
        "turn_failed",
        f"the TURN server {name} gave no relay candidate while gathering, though it allocates "
        "now: a transient failure",
    )
