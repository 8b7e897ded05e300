"""`callbot serve`: the relay alone (optionally one node of a Redis cluster)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from ..console import say
from ..signaling.relay import DEFAULT_HOST, DEFAULT_PORT
from ..signaling.turn import RelayIceServers
from .options import relay_ice_options, run_sync, say_relay_ice, state_option


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port (WebSocket + HTTP).")
@state_option
@relay_ice_options
@click.option(
    "--janus",
    metavar="URL",
    envvar="CALLBOT_JANUS_URL",
    help="Janus WebSocket API for group calls (e.g. ws://127.0.0.1:8188), told to every client "
    "in welcome. Env: CALLBOT_JANUS_URL.",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar="CALLBOT_REDIS_URL",
    help="Join a cluster of relays sharing routing over this Redis (redis://host:6379/0; "
    "docs/howto/cluster.md). Env: CALLBOT_REDIS_URL.",
)
def serve(
    host: str,
    port: int,
    state_dir: Path | None,
    relay_ice: RelayIceServers,
    janus: str | None,
    redis_url: str | None,
) -> None:
    """Run the relay (signalling server) alone.

    \b
    Example:
      callbot serve --host 127.0.0.1 --port 8765 --state-dir /var/lib/callbot
      CALLBOT_TURN_SECRET=... callbot serve --turn-url turn:turn.example.org:3478
      callbot token create alice --ttl 1h --state-dir /var/lib/callbot
      callbot serve --janus ws://127.0.0.1:8188   # group calls (docs/howto/group-calls.md)
      callbot serve --redis redis://127.0.0.1:6379/0   # one node of a cluster
    """
    from ..signaling.backplane import RedisBackplane, redacted
    from ..signaling.relay import Relay

    if janus is not None and not janus.startswith(("ws://", "wss://")):
        raise click.BadParameter(
            "a ws:// or wss:// URL of Janus's WebSocket API", param_hint="--janus"
        )

    async def serve_forever() -> None:
        backplane = RedisBackplane(redis_url) if redis_url else None
        relay = Relay(
            host, port, state_dir, ice_servers=relay_ice.fixed, turn=relay_ice.turn,
            janus_url=janus, backplane=backplane,
        )  # fmt: skip
        await relay.start()
        say(
            f"relay listening on {relay.url} (health: {relay.http_url}/healthz; "
            f"state in {relay.state.directory})",
            "bold",
        )
        say_relay_ice(relay_ice)
        if janus is not None:
            say(f"group calls on Janus at {janus}")
        if backplane is not None:
            say(f"cluster node {backplane.node} sharing routing over {redacted(backplane.url)}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await relay.stop()

    try:
        run_sync(serve_forever())
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
