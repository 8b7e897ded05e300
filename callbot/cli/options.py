"""Options and helpers shared by the `callbot` commands: durations, ICE, trust, state dir."""

from __future__ import annotations

import asyncio
import functools
import os
import re
from pathlib import Path
from typing import Any

import click

from ..config import CallConfig
from ..console import say
from ..errors import CallbotError
from ..ice import IceConfig
from ..settings import Settings, SettingsError, default_state_dir, parse_addresses
from ..signaling.turn import (
    DEFAULT_TTL,
    RelayIceServers,
    TurnRestAuth,
    split_urls,
    stun_servers,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SOFTPHONE_TTL = 24 * 3600.0  # lifetime of the token in the link `callbot run` prints


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '2d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h or 2d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def stack_options(options: list[Any], func: Any) -> Any:
    """`func` decorated with each of `options`, listed top to bottom as in `--help`."""
    for option in reversed(options):
        func = option(func)
    return func


def ice_option(func: Any) -> Any:
    return click.option(
        "--ice-address",
        "ice_addresses",
        multiple=True,
        metavar="IP",
        help="Only gather ICE candidates on this local address (repeatable). "
        "Default: $CALLBOT_ICE_ADDRESSES, else every non-loopback address, else loopback.",
    )(func)


def state_option(func: Any) -> Any:
    """--state-dir, resolved here: the flag, else $CALLBOT_STATE_DIR, else the XDG default."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        callback=lambda _ctx, _param, value: value or default_state_dir(os.environ),
        help="Relay state (token secret, revocations). Default: $CALLBOT_STATE_DIR, "
        "else ~/.local/state/callbot.",
    )(func)


def trust_options(func: Any) -> Any:
    """--identity, --known-peers, --require-signatures, --trust-on-first-use (or their
    environment variables): part of the command's settings (`cli_settings`)."""
    options = [
        click.option("--identity", envvar="CALLBOT_IDENTITY", metavar="KEY",
                     type=click.Path(exists=True, dir_okay=False),
                     help="Sign our offers and answers with this key (`callbot keygen`)."),
        click.option("--known-peers", envvar="CALLBOT_KNOWN_PEERS", metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Pinned peer keys, one `user key` per line."),
        click.option("--require-signatures", is_flag=True, envvar="CALLBOT_REQUIRE_SIGNATURES",
                     help="Refuse calls whose offer or answer is not signed by a pinned key."),
        click.option("--trust-on-first-use", is_flag=True, envvar="CALLBOT_TRUST_ON_FIRST_USE",
                     help="Pin a peer's first key into --known-peers (logged)."),
    ]  # fmt: skip
    return stack_options(options, func)


def always_relay_option(func: Any) -> Any:
    """--always-relay ($CALLBOT_ALWAYS_RELAY), part of the command's settings."""
    return click.option(
        "--always-relay",
        is_flag=True,
        help="Relay-only ICE: calls use TURN relay candidates only, so peers never learn this "
        "host's addresses; needs a relay that hands out a TURN server (docs/howto/turn.md). "
        "Default: $CALLBOT_ALWAYS_RELAY.",
    )(func)


def relay_ice_options(func: Any) -> Any:
    """--stun-url, --turn-url, --turn-secret, --turn-ttl (or their environment variables),
    handed to the command as one `relay_ice: RelayIceServers` argument."""

    @functools.wraps(func)  # keeps the options already declared below this one
    def wrapper(
        *args: Any,
        stun_urls: tuple[str, ...],
        turn_urls: tuple[str, ...],
        turn_secret: str | None,
        turn_ttl: str | None,
        **kwargs: Any,
    ) -> Any:
        return func(*args, relay_ice=relay_ice_servers(stun_urls, turn_urls, turn_secret, turn_ttl),
                    **kwargs)  # fmt: skip

    options = [
        click.option("--stun-url", "stun_urls", multiple=True, metavar="URL",
                     envvar="CALLBOT_STUN_URLS",
                     help="STUN server handed to clients, e.g. stun:stun.example.org:3478 "
                     "(repeatable; $CALLBOT_STUN_URLS). Default: none."),
        click.option("--turn-url", "turn_urls", multiple=True, metavar="URL",
                     envvar="CALLBOT_TURN_URLS",
                     help="TURN server handed to clients with fresh time-limited credentials, "
                     "e.g. turn:turn.example.org:3478 (repeatable; $CALLBOT_TURN_URLS). "
                     "Needs --turn-secret."),
        click.option("--turn-secret", metavar="SECRET", envvar="CALLBOT_TURN_SECRET",
                     help="Secret shared with the TURN server (coturn's static-auth-secret). "
                     "Prefer $CALLBOT_TURN_SECRET: a command line is visible to other users."),
        click.option("--turn-ttl", metavar="DURATION", envvar="CALLBOT_TURN_TTL",
                     help="Lifetime of the TURN credentials: 90s, 15m, 1h... "
                     "($CALLBOT_TURN_TTL). Default: 1h."),
    ]  # fmt: skip
    return stack_options(options, wrapper)


def relay_ice_servers(
    stun_urls: tuple[str, ...],
    turn_urls: tuple[str, ...],
    turn_secret: str | None,
    turn_ttl: str | None,
) -> RelayIceServers:
    """Check the ICE server options of a relay (ClickException naming the problem)."""
    urls = split_urls(turn_urls)
    if bool(urls) != bool(turn_secret):
        raise click.UsageError(
            "--turn-url and --turn-secret go together ($CALLBOT_TURN_URLS, $CALLBOT_TURN_SECRET)"
        )
    try:
        fixed = stun_servers(split_urls(stun_urls))
        turn = None
        if urls and turn_secret:
            ttl = parse_duration(turn_ttl) if turn_ttl else DEFAULT_TTL
            turn = TurnRestAuth(tuple(urls), turn_secret, ttl)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return RelayIceServers(tuple(fixed), turn)


def say_relay_ice(relay_ice: RelayIceServers) -> None:
    """Tell which ICE servers the relay hands out, when it hands out any."""
    if relay_ice.fixed or relay_ice.turn:
        say(f"ICE servers for calls: {relay_ice.describe()}")


def cli_settings(
    *,
    server: str | None = None,
    token: str | None = None,
    identity: str | None = None,
    known_peers: str | None = None,
    require_signatures: bool = False,
    trust_on_first_use: bool = False,
    ice_addresses: tuple[str, ...] = (),
    always_relay: bool = False,
    state_dir: Path | None = None,
) -> Settings:
    """The command's settings: its flags over the environment's, resolved here, once, and
    handed to every bot of the command (a malformed one is a usage error naming it)."""
    try:
        flags = Settings(
            server=server,
            token=token,
            identity=identity,
            known_peers=known_peers,
            require_signatures=require_signatures,
            trust_on_first_use=trust_on_first_use,
            ice_addresses=parse_addresses(ice_addresses) or None,
            always_relay=always_relay,
            state_dir=state_dir,
        )
        return flags.over(Settings.from_env(os.environ))
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


def call_config(settings: Settings) -> CallConfig:
    """The CallConfig for calls the command places itself (callbot call, callbot demo)."""
    ice = IceConfig(addresses=settings.ice_addresses, relay_only=settings.always_relay)
    return CallConfig(ice=ice, fastpath=settings.fastpath)


def softphone_link(http_url: str, token: str) -> str:
    """The relay's softphone page, signed in with `token` (in the fragment: never sent)."""
    return f"{http_url.rstrip('/')}/#token={token}"


def say_softphone_link(relay: Any, user: str) -> None:
    """Print a link to the embedded relay's softphone, signed in as `user`."""
    link = softphone_link(relay.http_url, relay.mint(user, SOFTPHONE_TTL))
    say(f"softphone for {user}: {link}")


def run_sync(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except CallbotError as exc:
        raise click.ClickException(str(exc)) from exc
