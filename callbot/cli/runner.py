"""What `callbot run` does: load bots from a file, add plugins, run them against a relay."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import runpy
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from .. import plugins
from ..bot import SELF_TOKEN_TTL, Bot
from ..call import Call
from ..console import say
from ..embedded import start_relay
from ..errors import CallbotError
from ..settings import Settings
from ..signaling.relay import Relay
from ..signaling.turn import RelayIceServers


def load_bots(path: Path | None, as_id: str | None) -> list[Bot]:
    """The `Bot` objects a file defines at module level (or one bot named `as_id`)."""
    if path is None:
        if not as_id:
            raise CallbotError("give a bot file, or --as ID for a bot made only of plugins")
        return [Bot(as_id)]
    if not path.is_file():
        raise CallbotError(f"bot file {path} not found")
    namespace = runpy.run_path(str(path), run_name="__callbot__")
    bots = list({id(v): v for v in namespace.values() if isinstance(v, Bot)}.values())
    if not bots:
        if as_id:
            return [Bot(as_id)]
        raise CallbotError(f"{path} defines no Bot (e.g. bot = Bot('greeter'))")
    if as_id:
        if len(bots) > 1:
            raise CallbotError(f"{path} defines {len(bots)} bots: --as only renames a single one")
        bots[0].user_id = as_id
    return bots


def add_plugins(bots: Sequence[Bot], specs: Sequence[str]) -> None:
    """Apply each plugin spec (`name[:k=v,...]` or `file.py[:k=v,...]`) to every bot."""
    for spec in specs:
        name, options = plugins.parse_spec(spec)
        for bot in bots:
            plugins.apply(bot, name, options)


def report_calls(bot: Bot) -> None:
    """Print a line when each of the bot's calls connects and ends (with this worker's pid)."""
    name = f"{bot.user_id}[{os.getpid()}]"

    @bot.on("call")
    def follow(call: Call) -> None:
        call.on(
            "connected",
            lambda: say(f"{name}: call {call.id} with {call.peer} connected", "green"),
        )
        call.on(
            "ended",
            lambda reason, duration: say(
                f"{name}: call {call.id} with {call.peer} ended: {reason} ({duration:.1f}s)"
            ),
        )


async def run_bots(
    bots: Sequence[Bot],
    *,
    settings: Settings,
    host: str,
    port: int,
    max_calls: int | None,
    on_ready: Callable[[str, Relay | None], None],
    relay_ice: RelayIceServers | None = None,
) -> None:
    """Start an embedded relay unless `settings.server` is given (handing out `relay_ice`),
    configure the bots with `settings` (a bot whose code says otherwise is a SettingsError),
    start them, serve until a signal."""
    relay = None
    server = settings.server
    if server is None:
        relay = await start_relay(host, port, settings.state_dir, relay_ice)
        server = relay.url
    try:
        for bot in bots:
            token = settings.token or (
                relay.mint(bot.user_id, SELF_TOKEN_TTL, bot.role) if relay else None
            )
            bot.configure(replace(settings, server=server, token=token))
            if max_calls is not None:
                bot.max_calls = max_calls
        await asyncio.gather(*(bot.start() for bot in bots))
        # What exists now (modules, codecs, the bots) lives as long as the process: out of the
        # collector's sight, a full collection in the middle of many calls stalls the loop for
        # a fraction of the time (at 150 calls, one took ~70 ms and cost every call audio).
        gc.collect()
        gc.freeze()
        on_ready(server, relay)
        await _until_signal()
    finally:
        await asyncio.gather(*(bot.stop() for bot in bots), return_exceptions=True)
        if relay is not None:
            await relay.stop()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
