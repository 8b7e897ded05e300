"""The relay a bot embeds when it is given no server, and the line saying the bot is ready.

The edge between the bot side and the relay server: `bot.py` (for `Bot()` without a server)
and `callbot run` start the embedded relay through this module, so the bot core depends on the
relay client only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .console import say
from .errors import CallbotError
from .media.clock import AUDIO_TICKER
from .signaling.metrics import metric_lines
from .signaling.relay import DEFAULT_HOST, DEFAULT_PORT, WS_PATH, Relay
from .signaling.turn import RelayIceServers

if TYPE_CHECKING:
    from .bot import Bot

#: Where `callbot call` looks for a relay when given no --server.
DEFAULT_SERVER = f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}{WS_PATH}"


def media_clock_metrics() -> list[str]:
    """/metrics lines for the 20 ms media clock of the bots sharing this process with the relay
    (none until the clock has run)."""
    if not (AUDIO_TICKER.max_lag or AUDIO_TICKER.dropped):
        return []
    return [
        *metric_lines(
            "callbot_media_clock_lag_seconds",
            "gauge",
            "How late this process's 20 ms audio clock ran: p99 over the last 10 s.",
            [("", AUDIO_TICKER.lag_percentile(99))],
        ),
        *metric_lines(
            "callbot_audio_slots_dropped_total",
            "counter",
            "20 ms audio slots skipped because the process fell behind (all calls).",
            [("", AUDIO_TICKER.dropped)],
        ),
    ]


async def start_relay(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    state_dir: Path | None = None,
    relay_ice: RelayIceServers | None = None,
) -> Relay:
    """Start an embedded relay; a port already taken is a one-line `CallbotError` naming it and
    `--port`, not a traceback."""
    ice = relay_ice or RelayIceServers()
    relay = Relay(host, port, state_dir, ice_servers=ice.fixed, turn=ice.turn,
                  metrics=[media_clock_metrics])  # fmt: skip
    try:
        return await relay.start()
    except OSError as exc:
        relay.state.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CallbotError(
            f"cannot start the relay on {host}:{port}: {reason.lower()} "
            "(another callbot running? choose a free port with --port)"
        ) from exc


def say_ready(bot: Bot) -> None:
    """Print that `bot` is ready and the command that calls it (`--server` unless its relay is
    where `callbot call` looks by default)."""
    where = "" if bot.server == DEFAULT_SERVER else f" --server {bot.server}"
    say(f"bot {bot.user_id} ready (pid {os.getpid()}); call it with: "
        f"callbot call {bot.user_id}{where}", "green")  # fmt: skip
