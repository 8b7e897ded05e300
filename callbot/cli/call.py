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
    default=(DEFAULT_SERVER,),
    show_default=True,
    multiple=True,
    metavar="URL",
    help="Relay URL ($CALLBOT_SERVER); repeat it for the nodes of a cluster (the next one is "
    "used when one fails).",
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
    "--scenario",
    "scenario_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Run the steps of this YAML file once connected (docs/howto/scenarios.md).",
)
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="STEP",
    help='A scenario step, e.g. --step "dtmf 1" --step "expect tone 1000 within 3s"; '
    "repeatable, run after --scenario's.",
)
@click.option(
    "--impair",
    metavar="SPEC",
    help="Impair our media where it leaves and arrives: loss=5%,burst=3,jitter=30ms,delay=80ms "
    "(with --scenario or --step; overrides the file's).",
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
    server: tuple[str, ...],
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
    scenario_file: Path | None,
    steps: tuple[str, ...],
    impair: str | None,
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
    one-line reason. A SIP PEER (sip:user@host:port) is called with no relay (--server and
    --token are not used), offering Opus and G.711; the call ends with a BYE. With
    --scenario/--step, runs those steps instead of playing a file; the first failing step ends
    the run (exit 1, naming the step).

    \b
    Example:
      callbot call echo --play samples/tone-440.wav --record out.wav --duration 4 --json
      callbot call echo --play keys.wav --expect-dtmf 123 --expect-tone 440 --junit call.xml
      callbot call sip:desk@127.0.0.1:5060 --play f.wav --expect-tone 1000 --json
      callbot call desk --scenario samples/ivr.yaml --impair loss=5% --json
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
    scenario = _scenario(peer, scenario_file, steps, impair, play, play_video, duration)
    plan = CallPlan(
        peer=peer,
        server=server[0] if len(server) == 1 else list(server),
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
        scenario=scenario,
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


def _scenario(
    peer: str,
    path: Path | None,
    steps: tuple[str, ...],
    impair: str | None,
    play: Path | None,
    play_video: Path | None,
    duration: float | None,
) -> Any:
    """The scenario of --scenario/--step/--impair (None without one), checked before dialling
    (for this machine and this `peer`: see `check_ready`)."""
    if path is None and not steps:
        if impair is not None:
            raise click.UsageError("--impair needs --scenario or --step")
        return None
    clash = [name for name, given in (("--play", play), ("--play-video", play_video),
                                      ("--duration", duration)) if given is not None]  # fmt: skip
    if clash:
        raise click.UsageError(f"{', '.join(clash)} cannot go with a scenario: use `play FILE`")
    from ..scenario import Impairment, ScenarioError, check_ready, from_strings, load
    from ..sip import is_sip_uri

    try:
        inline = from_strings(steps)
        scenario = load(path).with_steps(inline.steps) if path is not None else inline
        if impair is not None:
            scenario = scenario.impaired(Impairment.parse(impair))
        check_ready(scenario, sip=is_sip_uri(peer))
    except ScenarioError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--impair") from None
    return scenario


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
    for step in report.get("steps", []):
        verdict = {True: "ok", False: "FAILED", None: "not run"}[step["ok"]]
        say(f"step {step['step']} `{step['text']}`: {verdict}: {step['message']}")
    grades = report.get("grades") or {}
    if grades.get("mos") is not None:
        say(f"estimated MOS: {grades['mos']}" + "".join(
            f"  {k} {grades[k]['mos']}" for k in ("sent", "received") if k in grades))  # fmt: skip
    for entry in report.get("expectations", []):
        say(f"expect {entry['name']}: {'ok' if entry['ok'] else 'FAILED'}: {entry['message']}")
