"""The `callbot` command line: run, serve, call, token, demo."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from .config import CallConfig
from .console import say, status
from .errors import CallbotError
from .ice import ENV_ALWAYS_RELAY, IceConfig
from .safe import SafeFormatter
from .signaling.relay import DEFAULT_HOST, DEFAULT_PORT, WS_PATH
from .signaling.turn import (
    DEFAULT_TTL,
    RelayIceServers,
    TurnRestAuth,
    split_urls,
    stun_servers,
)

ENV_SERVER = "CALLBOT_SERVER"
DEFAULT_SERVER = f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}{WS_PATH}"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SOFTPHONE_TTL = 24 * 3600.0  # lifetime of the token in the link `callbot run` prints


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '2d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h or 2d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _ice_option(func: Any) -> Any:
    return click.option(
        "--ice-address",
        "ice_addresses",
        multiple=True,
        metavar="IP",
        help="Only gather ICE candidates on this local address (repeatable). "
        "Default: $CALLBOT_ICE_ADDRESSES, else every non-loopback address, else loopback.",
    )(func)


def _state_option(func: Any) -> Any:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Relay state (token secret, revocations). Default: $CALLBOT_STATE_DIR, "
        "else ~/.local/state/callbot.",
    )(func)


def _trust_options(func: Any) -> Any:
    """--identity, --known-peers, --require-signatures, --trust-on-first-use: exported to the
    environment, where every bot of this command (and worker processes) takes them from."""
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
    for option in reversed(options):
        func = option(func)
    return func


def _export_trust(
    identity: str | None, known_peers: str | None, require: bool, first_use: bool
) -> None:
    for name, value in (
        ("CALLBOT_IDENTITY", identity),
        ("CALLBOT_KNOWN_PEERS", known_peers),
        ("CALLBOT_REQUIRE_SIGNATURES", "1" if require else None),
        ("CALLBOT_TRUST_ON_FIRST_USE", "1" if first_use else None),
    ):
        if value:
            os.environ[name] = str(value)


def _always_relay_option(func: Any) -> Any:
    """--always-relay, exported as $CALLBOT_ALWAYS_RELAY, which every bot of the command (and
    its worker processes) reads through `IceConfig.from_env`."""

    def export(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            os.environ[ENV_ALWAYS_RELAY] = "1"

    return click.option(
        "--always-relay",
        is_flag=True,
        expose_value=False,
        callback=export,
        help="Relay-only ICE: calls use TURN relay candidates only, so peers never learn this "
        "host's addresses; needs a relay that hands out a TURN server (docs/howto/turn.md). "
        f"Default: ${ENV_ALWAYS_RELAY}.",
    )(func)


def _relay_ice_options(func: Any) -> Any:
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
        return func(*args, relay_ice=_relay_ice(stun_urls, turn_urls, turn_secret, turn_ttl),
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
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _relay_ice(
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


def _say_relay_ice(relay_ice: RelayIceServers) -> None:
    """Tell which ICE servers the relay hands out, when it hands out any."""
    if relay_ice.fixed or relay_ice.turn:
        say(f"ICE servers for calls: {relay_ice.describe()}")


def _call_config(ice_addresses: tuple[str, ...]) -> CallConfig:
    try:
        return CallConfig(ice=IceConfig.from_env(addresses=ice_addresses or None))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ice-address") from exc


def _softphone_link(http_url: str, token: str) -> str:
    """The relay's softphone page, signed in with `token` (in the fragment: never sent)."""
    return f"{http_url.rstrip('/')}/#token={token}"


def _say_softphone_link(relay: Any, user: str) -> None:
    """Print a link to the embedded relay's softphone, signed in as `user`."""
    link = _softphone_link(relay.http_url, relay.mint(user, SOFTPHONE_TTL))
    say(f"softphone for {user}: {link}")


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except CallbotError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="callbot")
def main(verbose: int) -> None:
    """callbot: headless WebRTC media bots.

    \b
    Examples:
      callbot run samples/greeter.py          # a bot, with an embedded relay
      callbot call greeter --play samples/tone-440.wav --record reply.wav --json
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = logging.StreamHandler()  # one printable line per record: remote strings escaped
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


# -- run ------------------------------------------------------------------------------------------


@main.command()
@click.argument("bot_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as", "as_id", metavar="ID", help="User id of the bot (required without a file).")
@click.option("--server", metavar="URL", help="Relay to join. Default: start an embedded one.")
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
@click.option(
    "--worker-of", type=int, hidden=True
)  # set by the pool's supervisor, see _run_workers
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
@_state_option
@_ice_option
@_trust_options
@_relay_ice_options
@_always_relay_option
def run(
    bot_file: Path | None,
    as_id: str | None,
    server: str | None,
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
    """
    from . import runner

    _export_trust(identity, known_peers, require_signatures, trust_on_first_use)
    if workers > 1:
        _run_workers(
            bot_file,
            as_id,
            server,
            token,
            plugin_specs,
            workers,
            max_calls,
            host,
            port,
            softphone_user,
            state_dir,
            ice_addresses,
            relay_ice,
        )
        return
    if worker_of is not None:
        _end_with_supervisor(worker_of)
    if ice_addresses:
        os.environ["CALLBOT_ICE_ADDRESSES"] = ",".join(ice_addresses)
    _call_config(ice_addresses)  # validates the addresses
    try:
        bots = runner.load_bots(bot_file, as_id)
        runner.add_plugins(bots, plugin_specs)
    except CallbotError as exc:
        raise click.ClickException(str(exc)) from exc
    for bot in bots:
        runner.report_calls(bot)

    def ready(url: str, relay: Any) -> None:
        if relay is not None:
            say(f"relay listening on {url} (state in {relay.state.directory})", "bold")
            _say_relay_ice(relay_ice)
            _say_softphone_link(relay, softphone_user)
        for bot in bots:
            runner.say_ready(bot)

    _run(
        runner.run_bots(
            bots,
            server=server,
            token=token,
            host=host,
            port=port,
            state_dir=state_dir,
            max_calls=max_calls,
            on_ready=ready,
            relay_ice=relay_ice,
        )
    )


def _run_workers(
    bot_file: Path | None,
    as_id: str | None,
    server: str | None,
    token: str | None,
    plugin_specs: tuple[str, ...],
    workers: int,
    max_calls: int | None,
    host: str,
    port: int,
    softphone_user: str,
    state_dir: Path | None,
    ice_addresses: tuple[str, ...],
    relay_ice: RelayIceServers,
) -> None:
    """N worker processes in one pool; this process hosts the relay unless --server."""
    from . import runner

    async def supervise() -> None:
        relay = None
        url = server
        if url is None:
            relay = await runner.start_relay(host, port, state_dir, relay_ice)
            url = relay.url
            say(f"relay listening on {url}", "bold")
            _say_relay_ice(relay_ice)
            _say_softphone_link(relay, softphone_user)
        command = [sys.executable, "-m", "callbot", "run", "--server", url, "--workers", "1",
                   "--worker-of", str(os.getpid())]  # fmt: skip
        if bot_file is not None:
            command.insert(4, str(bot_file))
        for flag, value in (
            ("--as", as_id),
            ("--token", token),
            ("--max-calls", max_calls),
            ("--state-dir", state_dir),
        ):
            if value is not None:
                command += [flag, str(value)]
        for spec in plugin_specs:
            command += ["--plugin", spec]
        for address in ice_addresses:
            command += ["--ice-address", address]
        children = [subprocess.Popen(command) for _ in range(workers)]
        say(f"started {workers} workers: pids {[c.pid for c in children]}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            while not stop.is_set() and all(c.poll() is None for c in children):
                await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=0.5)
        finally:
            for child in children:  # only the processes started here, by PID
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            # wait without blocking the loop: the relay here must see the workers say goodbye
            deadline = loop.time() + 10
            while any(c.poll() is None for c in children) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if relay is not None:
                await relay.stop()
        failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM)]
        if failed and not stop.is_set():
            raise CallbotError(f"a worker exited with status {failed[0]}")

    _run(supervise())


def _end_with_supervisor(supervisor: int) -> None:
    """A pool worker gets SIGTERM when its supervisor dies, even by SIGKILL (Linux), so no
    orphaned worker goes on answering calls; elsewhere it only checks once at start."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above took effect
        raise SystemExit(1)


# -- serve ----------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port (WebSocket + HTTP).")
@_state_option
@_relay_ice_options
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
    from .signaling.backplane import RedisBackplane, redacted
    from .signaling.relay import Relay

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
        _say_relay_ice(relay_ice)
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
        _run(serve_forever())
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


# -- call -----------------------------------------------------------------------------------------


@main.command()
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
@_state_option
@_ice_option
@_trust_options
@_always_relay_option
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
    from .expectations import failure_reason, from_options
    from .junit import write_call_report
    from .smoke import CallPlan, place_call

    _export_trust(identity, known_peers, require_signatures, trust_on_first_use)
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
        config=_call_config(ice_addresses),
        state_dir=state_dir,
        expect=from_options(expect_tones, expect_dtmf, expect_video_frames, expect_speech),
        require_verified=require_verified,
    )
    try:
        with status(f"calling {peer}…") as progress:
            report = _run(place_call(plan, progress=progress.update))
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


# -- media ----------------------------------------------------------------------------------------

from .cli_media import media  # noqa: E402  (fixture writers, in their own module)

main.add_command(media)


# -- token ----------------------------------------------------------------------------------------


@main.group()
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
@_state_option
def token_create(user: str, ttl: str, relay_url: str, role: str, state_dir: Path | None) -> None:
    """Print a new token for USER (and, on stderr, a softphone link signed in with it).

    \b
    Examples:
      TOKEN=$(callbot token create alice --ttl 1h)
      TOKEN=$(callbot token create echo --role bot --ttl 7d)
    """
    from .signaling.state import RelayState

    state = RelayState(state_dir)
    try:
        token = state.mint(user, parse_duration(ttl), role)
    finally:
        state.close()
    click.echo(token)
    if role == "user":
        say(f"softphone for {user}: {_softphone_link(relay_url, token)}")


@token.command("revoke")
@click.argument("user")
@_state_option
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
    from .signaling.backplane import cluster_generation, revoke_in_cluster
    from .signaling.state import RelayState

    state = RelayState(state_dir)
    try:
        if redis_url:  # above what any node knows, so every node adopts it
            cluster = _run(cluster_generation(redis_url, user))
            state.raise_generation(user, cluster)
        generation = state.revoke(user)
        if redis_url:
            generation = _run(revoke_in_cluster(redis_url, user, generation))
    finally:
        state.close()
    say(f"revoked all tokens of {user} (generation {generation})")


# -- demo -----------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--clip",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Media file to play (default: a generated 4 s 640x480 clip, 440 Hz tone).",
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
    """A caller plays a clip to a bot through an embedded relay; print what the bot got.

    \b
    Example:
      callbot demo
      callbot demo --clip samples/welcome.wav --out recordings --json
    """
    from .demo import run_demo

    out = out_dir or Path(tempfile.mkdtemp(prefix="callbot-demo-"))
    summary = _run(run_demo(clip, out, _call_config(ice_addresses)))
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        for key, value in summary.as_dict().items():
            click.echo(f"{key.replace('_', ' ') + ':':<24}{value}")
    if not summary.ok:
        raise SystemExit(1)


# -- keygen ---------------------------------------------------------------------------------------


@main.command()
@click.argument(
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("~/.config/callbot/identity.key").expanduser(),
)
@click.option(
    "--user",
    default="ME",
    show_default=True,
    help="User id to put in the printed known_peers line.",
)
@click.option("--force", is_flag=True, help="Replace an existing key file.")
def keygen(path: Path, user: str, force: bool) -> None:
    """Create an Ed25519 identity key (mode 0600) and print its known_peers line.

    Peers pin that line in their known_peers file; with --identity KEY your offers and answers
    are signed, so a relay that tampers with the media setup is caught.

    \b
    Example:
      callbot keygen ~/.config/callbot/greeter.key --user greeter >> peers/known_peers
      callbot run samples/greeter.py --identity ~/.config/callbot/greeter.key \\
          --known-peers peers/known_peers --require-signatures
    """
    from .identity import IdentityKey

    if path.exists() and not force:
        raise click.ClickException(f"{path} exists (use --force to replace it)")
    key = IdentityKey.generate()
    key.save(path)
    say(f"identity key written to {path} (mode 0600)")
    click.echo(f"{user} {key.public_key}")
