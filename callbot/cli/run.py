"""`callbot run`: serve the bots of a file (or plugin-only bots) through a relay."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..console import say
from ..embedded import say_ready
from ..errors import CallbotError
from ..settings import relay_urls
from ..signaling.relay import DEFAULT_HOST, DEFAULT_PORT
from ..signaling.turn import RelayIceServers
from .options import (
    always_relay_option,
    cli_settings,
    ice_option,
    relay_ice_options,
    run_sync,
    say_relay_ice,
    say_softphone_link,
    state_option,
    trust_options,
)
from .sip import sip_options, sip_settings
from .workers import end_with_supervisor, run_workers


@click.command()
@click.argument("bot_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as", "as_id", metavar="ID", help="User id of the bot (required without a file).")
@click.option(
    "--server",
    multiple=True,
    metavar="URL",
    help="Relay to join; repeat it for the nodes of a cluster (the next one is used when one "
    "fails). Default: start an embedded one.",
)
@click.option("--token", metavar="TOKEN", envvar="CALLBOT_TOKEN", help="Token for --server.")
@click.option(
    "--plugin",
    "plugin_specs",
    multiple=True,
    metavar="SPEC",
    help="NAME[:key=value,...] or FILE.py[:key=value,...]; repeatable.",
)
@click.option(
    "--workers",
    default=lambda: os.cpu_count() or 1,
    show_default="one per core",
    envvar="CALLBOT_WORKERS",
    type=click.IntRange(1, 64),
    help="Processes in this bot's pool (each bot's state is per process).",
)
@click.option("--worker-of", type=int, hidden=True)  # set by the pool's supervisor, see run_workers
@click.option("--max-calls", type=click.IntRange(1), help="Calls per worker before it is busy.")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Embedded relay address.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Embedded relay port.")
@click.option(
    "--softphone-user",
    default="you",
    show_default=True,
    metavar="ID",
    help="User id of the softphone link printed when the embedded relay starts.",
)
@state_option
@ice_option
@trust_options
@relay_ice_options
@always_relay_option
@sip_options
def run(
    bot_file: Path | None,
    as_id: str | None,
    server: tuple[str, ...],
    token: str | None,
    plugin_specs: tuple[str, ...],
    workers: int,
    worker_of: int | None,
    max_calls: int | None,
    host: str,
    port: int,
    softphone_user: str,
    state_dir: Path | None,
    ice_addresses: tuple[str, ...],
    identity: str | None,
    known_peers: str | None,
    require_signatures: bool,
    trust_on_first_use: bool,
    relay_ice: RelayIceServers,
    always_relay: bool,
    sip_address: str | None,
    sip_registrar: str | None,
    sip_password_file: Path | None,
    sip_register_every: int,
    sip_early_media: bool,
) -> None:
    """Run the bot(s) defined in BOT_FILE, answering calls through a relay.

    Without --server an embedded relay starts on 127.0.0.1:8765 and tokens are minted
    automatically; it serves the softphone too, and a link to it signed in as
    --softphone-user is printed. Stop with Ctrl-C.

    \b
    Examples:
      callbot run samples/echo_bot.py
      callbot run samples/greeter.py --plugin record:dir=recordings
      callbot run --as echo --plugin echo --workers 2
      callbot run mybot.py --server ws://relay:8765/ws --token "$TOKEN"
      callbot run mybot.py --sip sip:ivr@127.0.0.1:5080
    """
    from . import runner

    settings = cli_settings(
        token=token,
        identity=identity,
        known_peers=known_peers,
        require_signatures=require_signatures,
        trust_on_first_use=trust_on_first_use,
        ice_addresses=ice_addresses,
        always_relay=always_relay,
        state_dir=state_dir if _given("state_dir") else None,  # a default is no conflict
    )
    settings = replace(
        settings, server=relay_urls(server)
    )  # no --server: an embedded relay, not $CALLBOT_SERVER
    sip = sip_settings(sip_address, sip_registrar, sip_password_file, sip_register_every,
                       sip_early_media)  # fmt: skip
    if sip is not None and workers > 1:
        if _given("workers"):
            raise click.UsageError("--sip runs one process (one SIP address): --workers 1")
        workers = 1
    if workers > 1:
        run_workers(
            bot_file, as_id, plugin_specs, workers, max_calls, host, port, softphone_user,
            settings, relay_ice,
        )  # fmt: skip
        return
    if worker_of is not None:
        end_with_supervisor(worker_of)
    try:
        bots = runner.load_bots(bot_file, as_id)
        runner.add_plugins(bots, plugin_specs)
    except CallbotError as exc:
        raise click.ClickException(str(exc)) from exc
    if sip is not None:
        if len(bots) != 1:
            raise click.ClickException(
                f"--sip gives one bot an address; {bot_file} has {len(bots)}"
            )
        bots[0].sip = sip
    for bot in bots:
        runner.report_calls(bot)

    def ready(url: str, relay: Any) -> None:
        if relay is not None:
            say(f"relay listening on {url} (state in {relay.state.directory})", "bold")
            say_relay_ice(relay_ice)
            say_softphone_link(relay, softphone_user)
        for bot in bots:
            say_ready(bot)
            if bot.sip is not None:
                say(f"bot {bot.user_id} takes SIP calls at {bot.sip.address}", "green")

    run_sync(
        runner.run_bots(
            bots,
            settings=settings,
            host=host,
            port=port,
            max_calls=max_calls,
            on_ready=ready,
            relay_ice=relay_ice,
        )
    )


def _given(name: str) -> bool:
    """Whether option `name` of the running command came from its command line."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.DEFAULT
