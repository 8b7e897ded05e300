"""The `callbot` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path

import click

from .config import CallConfig
from .errors import CallbotError
from .ice import IceConfig


def _ice_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--ice-address",
        "ice_addresses",
        multiple=True,
        metavar="IP",
        help="Only gather ICE candidates on this local address (repeatable). "
        "Default: $CALLBOT_ICE_ADDRESSES, else every non-loopback address, "
        "else loopback.",
    )(func)


def _call_config(ice_addresses: tuple[str, ...]) -> CallConfig:
    try:
        return CallConfig(ice=IceConfig.from_env(addresses=ice_addresses or None))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ice-address") from exc


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """callbot: headless WebRTC media bots."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option(
    "--clip",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Media file to play (any format PyAV reads). "
    "Default: a generated 4 s 640x480 clip with a 440 Hz tone.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the recordings (default: a new temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_ice_option
def demo(
    clip: Path | None, out_dir: Path | None, as_json: bool, ice_addresses: tuple[str, ...]
) -> None:
    """Call between two in-process bots: play a clip one way, record it, print what arrived.

    \b
    Example:
      callbot demo
      callbot demo --clip samples/welcome.wav --out recordings --json
    """
    from .demo import run_demo

    config = _call_config(ice_addresses)
    out = out_dir or Path(tempfile.mkdtemp(prefix="callbot-demo-"))
    try:
        summary = asyncio.run(run_demo(clip, out, config))
    except CallbotError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        click.echo(f"connected:         {summary.connected}")
        click.echo(f"seconds sent:      {summary.seconds_sent}")
        click.echo(f"seconds received:  {summary.seconds_received}")
        click.echo(f"dominant freq:     {summary.dominant_hz} Hz")
        click.echo(f"level:             {summary.level_dbfs} dBFS")
        click.echo(f"video frames:      {summary.video_frames_received}")
        click.echo(f"recordings:        {summary.audio_path}, {summary.video_path}")
    if not summary.ok:
        raise SystemExit(1)
