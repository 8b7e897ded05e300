"""`callbot call`: the CI smoke-test client (place a call, play, record, check, report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..console import say, status
from ..embedded import DEFAULT_SERVER
from .options import (
    always_relay_option,
    cli_settings,
    ice_option,
    run_sync,
    state_option,
    trust_options,
)

ENV_SERVER = "CALLBOT_SERVER"


@click.command()
@click.argument("peer")
@click.option(
    "--server",
    envvar=ENV_SERVER,
    default=DEFAULT_SERVER,
    show_default=True,
    metavar="URL",
    help="Relay URL ($CALLBOT_SERVER).",
)
@click.option(
    "--token",
    envvar="CALLBOT_TOKEN",
    metavar="TOKEN",
    help="Token ($CALLBOT_TOKEN). Default: minted from the local state dir.",
)
@click.option("--as", "user", default="caller", show_default=True, help="Our user id.")
@click.option(
    "--play",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Audio file to play into the call.",
)
@click.option(
    "--play-video",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Video file (and its sound) to play into the call.",
)
@click.option("--loop", is_flag=True, help="Loop the played file.")
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record the peer's audio (.wav .ogg .mp3 .mp4 .webm .mkv ...).",
)
@click.option(
    "--record-video",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record the peer's video (.mp4 .webm .mkv).",
)
@click.option("--video", is_flag=True, help="Offer video even without --play-video.")
@click.option(
    "--duration",
    type=float,
    metavar="S",
    help="Seconds to stay connected (default: the playback plus 1 s, else 10).",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for the call to be up: reaching the relay, ringing, answering and "
    "connecting media (how long it then lasts is --duration).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option(
    "--expect-tone",
    "expect_tones",
    multiple=True,
    type=float,
    metavar="HZ",
    help="Fail unless the peer's audio has this tone (≥ -40 dBFS for ≥ 0.2 s); repeatable.",
)
@click.option(
    "--expect-dtmf", metavar="DIGITS", help="Fail unless exactly these DTMF keys come back."
)
@click.option(
    "--expect-video-frames",
    type=click.IntRange(1),
    metavar="N",
    help="Fail unless at least N video frames come back (offers video).",
)
@click.option(
    "--expect-speech", is_flag=True, help="Fail unless the peer's audio sounds like speech."
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JUnit XML report: a testcase for the call and one per expectation.",
)
@click.option(
    "--require-verified",
    is_flag=True,
    help="Fail unless the peer's answer was signed by its pinned key (--known-peers).",
)
@state_option
@ice_option
@trust_options
@always_relay_option
def call(
    peer: str,
    server: str,
    token: str | None,
    user: str,
    play: Path | None,
    play_video: Path | None,
    loop: bool,
    record: Path | None,
    record_video: Path | None,
    video: bool,
    duration: float | None,
    timeout: float,
    as_json: bool,
    expect_tones: tuple[float, ...],
    expect_dtmf: str | None,
    expect_video_frames: int | None,
    expect_speech: bool,
    junit: Path | None,
    require_verified: bool,
    state_dir: Path | None,
    ice_addresses: tuple[str, ...],
    identity: str | None,
    known_peers: str | None,
    require_signatures: bool,
    trust_on_first_use: bool,
    always_relay: bool,
) -> None:
    """Call PEER, play a file, record the reply, report: the CI smoke-test client.

    Exits 0 only if the call connected and ended normally (either side hung up) and every
    --expect-* holds (checked on --record/--record-video, or on a temporary recording),
    and with --require-verified the peer's signature verified; otherwise exits 1 with a
    one-line reason.

    \b
    Example:
      callbot call echo --play samples/tone-440.wav --record out.wav --duration 4 --json
      callbot call echo --play keys.wav --expect-dtmf 123 --expect-tone 440 --junit call.xml
    """
    from ..testing.expectations import failure_reason, from_options
    from ..testing.junit import write_call_report
    from ..testing.smoke import CallPlan, place_call

    settings = cli_settings(
        identity=identity,
        known_peers=known_peers,
        require_signatures=require_signatures,
        trust_on_first_use=trust_on_first_use,
        ice_addresses=ice_addresses,
        always_relay=always_relay,
    )
    plan = CallPlan(
        peer=peer,
        server=server,
        token=token,
        user=user,
        play=play,
        play_video=play_video,
        loop=loop,
        record=record,
        record_video=record_video,
        duration=duration,
        timeout=timeout,
        video=video,
        settings=settings,
        state_dir=state_dir,
        expect=from_options(expect_tones, expect_dtmf, expect_video_frames, expect_speech),
        require_verified=require_verified,
    )
    try:
        with status(f"calling {peer}…") as progress:
            report = run_sync(place_call(plan, progress=progress.update))
    except click.ClickException as exc:  # e.g. the relay refused us: still a JUnit failure
        if junit is not None:
            write_call_report(junit, {"peer": peer, "ok": False, "error": exc.message})
        raise
    if junit is not None:
        write_call_report(junit, report)
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_report(report)
    if not report["ok"]:
        say(failure_reason(report) or f"call to {peer} failed", "red")
        raise SystemExit(1)


def _print_report(report: dict[str, Any]) -> None:
    remote = report.get("remote_end_reason")
    say(
        f"connected: {report['connected']}  ended: {report.get('end_reason')}"
        + (f" ({remote})" if remote else "")
        + f"  seconds: {report.get('seconds')}  peer verified: {report.get('peer_verified')}"
    )
    for kind, entry in report.get("received", {}).items():
        say(f"received {kind}: {entry.get('packets')} packets, {entry.get('frames')} frames")
    for kind, entry in report.get("recordings", {}).items():
        say(f"recorded {kind}: {json.dumps(entry)}")
    for entry in report.get("expectations", []):
        say(f"expect {entry['name']}: {'ok' if entry['ok'] else 'FAILED'}: {entry['message']}")
