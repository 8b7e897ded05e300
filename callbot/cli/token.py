"""`callbot token create|revoke`: session tokens kept in the relay's state dir."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say
from ..signaling.relay import DEFAULT_HOST, DEFAULT_PORT
from .options import parse_duration, run_sync, softphone_link, state_option


@click.group()
def token() -> None:
    """Create and revoke session tokens (kept in the relay's state dir)."""


@token.command("create")
@click.argument("user")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90s, 15m, 1h, 7d...")
@click.option(
    "--relay-url",
    default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    metavar="URL",
    help="The relay's web address, for the softphone link printed on stderr.",
)
@click.option(
    "--role",
    type=click.Choice(["user", "bot"]),
    default="user",
    show_default=True,
    help="bot: the token may join USER's bot pool (callbot run --token); a user token may not.",
)
@state_option
def token_create(user: str, ttl: str, relay_url: str, role: str, state_dir: Path | None) -> None:
    """Print a new token for USER (and, on stderr, a softphone link signed in with it).

    \b
    Examples:
      TOKEN=$(callbot token create alice --ttl 1h)
      TOKEN=$(callbot token create echo --role bot --ttl 7d)
    """
    from ..signaling.state import RelayState

    state = RelayState(state_dir)
    try:
        token = state.mint(user, parse_duration(ttl), role)
    finally:
        state.close()
    click.echo(token)
    if role == "user":
        say(f"softphone for {user}: {softphone_link(relay_url, token)}")


@token.command("revoke")
@click.argument("user")
@state_option
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar="CALLBOT_REDIS_URL",
    help="Also revoke on every relay of the cluster sharing this Redis. Env: CALLBOT_REDIS_URL.",
)
def token_revoke(user: str, state_dir: Path | None, redis_url: str | None) -> None:
    """Invalidate every token of USER; a running relay cuts their sessions at once.

    \b
    Examples:
      callbot token revoke alice
      callbot token revoke alice --redis redis://127.0.0.1:6379/0   # the whole cluster
    """
    from ..signaling.backplane import cluster_generation, revoke_in_cluster
    from ..signaling.state import RelayState

    state = RelayState(state_dir)
    try:
        if redis_url:  # above what any node knows, so every node adopts it
            cluster = run_sync(cluster_generation(redis_url, user))
            state.raise_generation(user, cluster)
        generation = state.revoke(user)
        if redis_url:
            generation = run_sync(revoke_in_cluster(redis_url, user, generation))
    finally:
        state.close()
    say(f"revoked all tokens of {user} (generation {generation})")
