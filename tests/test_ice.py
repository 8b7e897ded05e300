"""ICE stays where it is told: explicit servers, the host-address filter, loopback fallback."""

from __future__ import annotations

import ipaddress
import os
import re

import aioice.ice
import pytest

from callbot import Call, CallConfig, CallError, IceConfig
from callbot.ice import interface_addresses, select_addresses
from callbot.settings import Settings, SettingsError

from helpers import RecordingPort


def _candidate_hosts(sdp: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ", sdp)}


def test_select_addresses_prefers_allowed_then_public_then_loopback() -> None:
    host = ["127.0.0.1", "::1", "192.0.2.7", "2001:db8::5"]
    assert select_addresses(host, ["127.0.0.1"]) == ["127.0.0.1"]
    assert select_addresses(host, ["198.51.100.1"]) == []
    assert select_addresses(host, None) == ["192.0.2.7", "2001:db8::5"]
    assert select_addresses(["127.0.0.1", "::1"], None) == ["127.0.0.1", "::1"]


def test_addresses_are_checked_and_read_from_the_environment_only_at_the_edge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBOT_ICE_ADDRESSES", " 127.0.0.1, ::1 ")
    assert IceConfig().addresses is None  # a config never reads the environment
    assert Settings.from_env(os.environ).ice_addresses == ("127.0.0.1", "::1")
    assert IceConfig(addresses=["10.0.0.1"]).addresses == ("10.0.0.1",)
    with pytest.raises(ValueError, match="not-an-ip"):
        IceConfig(addresses=["not-an-ip"])
    with pytest.raises(SettingsError, match="not-an-ip"):
        Settings.from_env({"CALLBOT_ICE_ADDRESSES": "127.0.0.1,not-an-ip"})


def test_server_list_is_always_explicit() -> None:
    # aiortc swaps None for Google's public STUN server; callbot never passes None.
    assert IceConfig().rtc_configuration().iceServers == []
    assert CallConfig().ice.rtc_configuration().iceServers == []


async def test_offer_only_carries_allowed_addresses() -> None:
    port = RecordingPort()
    call = Call(
        direction="outbound",
        peer="x",
        signaling=port,
        config=CallConfig(ice=IceConfig(addresses=("127.0.0.1",))),
    )
    await call.start()
    hosts = _candidate_hosts(port.sent[0]["sdp"])
    assert hosts == {"127.0.0.1"}
    assert "typ srflx" not in port.sent[0]["sdp"] and "typ relay" not in port.sent[0]["sdp"]
    await call.hangup()


async def test_address_not_on_this_host_is_a_clear_error() -> None:
    call = Call(
        direction="outbound",
        peer="x",
        signaling=RecordingPort(),
        config=CallConfig(ice=IceConfig(addresses=("198.51.100.77",))),
    )
    with pytest.raises(CallError, match=r"no_ice_address.*198\.51\.100\.77"):
        await call.start()
    assert call.end_reason == "failed"


async def test_filter_is_per_call_not_global(connect_pair) -> None:
    caller, _ = await connect_pair(
        caller_config=CallConfig(ice=IceConfig(addresses=("127.0.0.1",)))
    )
    await caller.hangup()
    # outside a call's gathering, aioice's own behaviour (plus the loopback fallback) holds
    outside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert outside == [
        a
        for a in select_addresses(interface_addresses(), None)
        if ipaddress.ip_address(a).version == 4
    ]


@pytest.mark.skipif(
    any(not ipaddress.ip_address(a).is_loopback for a in interface_addresses()),
    reason="host has non-loopback interfaces (runs in CI's loopback-only namespace)",
)
async def test_loopback_only_host_needs_no_setting(
    connect_pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLBOT_ICE_ADDRESSES", raising=False)
    caller, callee = await connect_pair(caller_config=CallConfig(), callee_config=CallConfig())
    assert caller.config.ice.addresses is None
    assert caller.state == callee.state == "connected"
    await caller.hangup()
