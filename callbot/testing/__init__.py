"""pytest plugin and assertions for smoke-testing calling apps with callbot.

Installed with callbot (entry point `pytest11: callbot`), so any project that has callbot
installed gets these fixtures, with nothing to configure:

- `callbot_relay`: an embedded relay on 127.0.0.1 (free port, own state dir): `.url`,
  `.mint(user)`, `.state_dir`;
- `bot_factory(path_or_bot=None, *, as_id=, plugins=[...], subprocess=False)`: starts the bot
  under test on that relay, in this process (a background event loop) or as
  `python -m callbot run ... --server URL`; stopped after the test;
- `caller(peer, play=..., duration=..., expect=[...])`: places a call and returns a
  `CallResult` whose `.report` is what `callbot call --json` prints; the peer's audio (and
  video, on video calls) is recorded into the test's tmp_path: `.audio`, `.video`.

And assertions whose failure message names the file, what was expected and what was found:
`assert_tone`, `assert_silence`, `assert_duration`, `assert_dtmf`, `assert_video`,
`assert_speech_like`.

    from callbot.testing import assert_dtmf, assert_tone

    def test_ivr_echoes_keys(bot_factory, caller):
        bot_factory("bots/ivr.py")
        result = caller("ivr", play="fixtures/keys.wav", duration=3)
        result.assert_ok()
        assert_dtmf(result.audio, "123#")

Fixtures are synchronous (they work in plain and asyncio tests alike); calls and in-process
bots run on a background event loop. In an async test, `await caller.acall(...)` does not
block the test's own loop. ICE candidates are gathered on 127.0.0.1 unless
`CALLBOT_ICE_ADDRESSES` says otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import re
import signal
import subprocess as sp
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from ..bot import Bot
    from ..signaling.relay import Relay
    from .expectations import CheckResult, Expectation

__all__ = [
    "BotHandle",
    "CallResult",
    "CallbotRelay",
    "Caller",
    "Expectation",
    "assert_dtmf",
    "assert_duration",
    "assert_silence",
    "assert_speech_like",
    "assert_tone",
    "assert_video",
]

T = TypeVar("T")
_AUTO: Any = object()  # "record into tmp_path" default of `caller`
Source = Any  # a path, frames, an AudioClip or a numpy array (see callbot.media.analysis)


def __getattr__(name: str) -> Any:  # lazy: importing the plugin must not load av/aiortc
    if name == "Expectation":
        from .expectations import Expectation

        return Expectation
    raise AttributeError(name)


# -- assertions ---------------------------------------------------------------------------------


def _require(result: CheckResult) -> CheckResult:
    __tracebackhide__ = True
    if not result.ok:
        raise AssertionError(result.message)
    return result


def assert_tone(
    source: Source,
    hz: float,
    min_db: float = -40.0,
    *,
    min_seconds: float = 0.2,
    tolerance: float | None = None,
    rate: int | None = None,
) -> CheckResult:
    """A tone at `hz` (± 1 %) of at least `min_db` dBFS sounds for `min_seconds` in total."""
    __tracebackhide__ = True
    from .expectations import check_tone

    return _require(
        check_tone(source, hz, min_db, min_seconds=min_seconds, tolerance=tolerance, rate=rate)
    )


def assert_silence(
    source: Source, max_db: float = -50.0, *, rate: int | None = None
) -> CheckResult:
    """Every 100 ms of the audio is quieter than `max_db` dBFS."""
    __tracebackhide__ = True
    from .expectations import check_silence

    return _require(check_silence(source, max_db, rate=rate))


def assert_duration(
    source: Source, seconds: float, tol: float = 0.5, *, rate: int | None = None
) -> CheckResult:
    """The file (audio or video) or audio lasts `seconds` ± `tol`."""
    __tracebackhide__ = True
    from .expectations import check_duration

    return _require(check_duration(source, seconds, tol, rate=rate))


def assert_dtmf(
    source: Source, digits: str, *, exact: bool = True, rate: int | None = None
) -> CheckResult:
    """The DTMF keys in the audio (or in `[(digit, seconds), ...]` events) are `digits`
    (or contain them, with `exact=False`)."""
    __tracebackhide__ = True
    from .expectations import check_dtmf

    return _require(check_dtmf(source, digits, exact=exact, rate=rate))


def assert_video(
    source: Source, min_frames: int = 1, size: tuple[int, int] | None = None
) -> CheckResult:
    """At least `min_frames` video frames, all `size` (width, height) when given."""
    __tracebackhide__ = True
    from .expectations import check_video

    return _require(check_video(source, min_frames, size))


def assert_speech_like(source: Source, *, rate: int | None = None) -> CheckResult:
    """The audio has speech's syllable-rate (2-8 Hz) energy modulation, pauses, and a voice's
    spectrum; steady tones, beeps, DTMF, noise and silence fail."""
    __tracebackhide__ = True
    from .expectations import check_speech_like

    return _require(check_speech_like(source, rate=rate))


# -- the background event loop ------------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread: the relay, in-process bots and calls live here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="callbot-testing", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result here."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"callbot: no result in {timeout} s") from None

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop's thread (objects that must stay on one thread)."""

        async def invoke() -> T:
            return function(*args)

        return self.run(invoke(), 30)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self.loop.is_running():
            try:
                self.run(cancel_all(), 10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


def _ice_addresses() -> tuple[str, ...]:
    """$CALLBOT_ICE_ADDRESSES (read here, at the plugin's edge), else loopback."""
    from ..settings import Settings

    return Settings.from_env(os.environ).ice_addresses or ("127.0.0.1",)


# -- the relay ----------------------------------------------------------------------------------


class CallbotRelay:
    """A running relay: `.url` to connect, `.mint(user)` for tokens, `.state_dir`."""

    def __init__(self, loop: LoopThread, relay: Relay, state_dir: Path) -> None:
        self._loop = loop
        self.relay = relay
        self.state_dir = state_dir

    @property
    def url(self) -> str:
        return self.relay.url

    @property
    def http_url(self) -> str:
        return self.relay.http_url

    @property
    def port(self) -> int:
        return self.relay.port

    def mint(self, user: str, ttl: float = 3600, role: str = "user") -> str:
        """A token for `user`, signed with this relay's secret (`role="bot"` for a bot)."""
        return self._loop.call(self.relay.mint, user, ttl, role)

    def revoke(self, user: str) -> int:
        """Invalidate every token of `user` (the relay cuts their sessions)."""
        return self._loop.call(self.relay.state.revoke, user)

    def __repr__(self) -> str:
        return f"<CallbotRelay {self.url}>"


# -- bots ---------------------------------------------------------------------------------------


@dataclass
class BotHandle:
    """A bot started by `bot_factory`: in-process (`.bots`) or a subprocess (`.process`)."""

    user_id: str
    bots: list[Bot] = field(default_factory=list)
    process: sp.Popen[bytes] | None = None
    log: Path | None = None
    _loop: LoopThread | None = None

    @property
    def bot(self) -> Bot:
        """The (first) in-process bot."""
        if not self.bots:
            raise AttributeError("a subprocess bot has no in-process Bot; see .process/.output()")
        return self.bots[0]

    def output(self) -> str:
        """What the subprocess printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)  # only this PID: we started it
                try:
                    self.process.wait(10)
                except sp.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        elif self._loop is not None and self.bots:

            async def stop_all() -> None:
                await asyncio.gather(*(b.stop() for b in self.bots), return_exceptions=True)

            self._loop.run(stop_all(), 30)
            self.bots = []


class BotFactory:
    """`bot_factory(...)`: start the bot under test on the test relay (see `__call__`)."""

    def __init__(self, loop: LoopThread, relay: CallbotRelay, directory: Path) -> None:
        self._loop = loop
        self._relay = relay
        self._directory = directory
        self._started: list[BotHandle] = []
        self._count = itertools.count(1)

    def __call__(
        self,
        source: str | os.PathLike[str] | Bot | None = None,
        *,
        as_id: str | None = None,
        plugins: Sequence[str] = (),
        subprocess: bool = False,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> BotHandle:
        """Start a bot: a bot file (`callbot run FILE`), a `Bot` object, or `as_id` plus
        `plugins` (specs as for `--plugin`, e.g. "echo", "record:dir=out").

        In-process by default; with `subprocess=True` it runs as
        `python -m callbot run [FILE] --server URL ...` (extra `args`, `env`), exactly as in
        production, and `.output()` has what it printed.
        """
        __tracebackhide__ = True
        if subprocess:
            if source is not None and not isinstance(source, str | os.PathLike):
                raise TypeError("subprocess=True needs a bot file (or none, with as_id)")
            handle = self._spawn(source, as_id, plugins, args, env, ready_timeout)
        else:
            handle = self._in_process(source, as_id, plugins, ready_timeout)
        self._started.append(handle)
        return handle

    def _in_process(
        self,
        source: str | os.PathLike[str] | Bot | None,
        as_id: str | None,
        plugin_specs: Sequence[str],
        ready_timeout: float,
    ) -> BotHandle:
        from ..bot import Bot
        from ..cli import runner

        if isinstance(source, Bot):
            bots = [source]
            if as_id:
                source.user_id = as_id
        else:
            bots = runner.load_bots(None if source is None else Path(source), as_id)
        runner.add_plugins(bots, plugin_specs)
        addresses = tuple(_ice_addresses())
        for bot in bots:
            bot.server = self._relay.url
            bot.token = self._relay.mint(bot.user_id, 24 * 3600, bot.role)
            bot.state_dir = self._relay.state_dir
            if bot.config.ice.addresses is None:
                bot.config = replace(bot.config, ice=replace(bot.config.ice, addresses=addresses))

        async def start_all() -> None:
            await asyncio.gather(*(b.start() for b in bots))

        handle = BotHandle(bots[0].user_id, bots=bots, _loop=self._loop)
        try:
            self._loop.run(start_all(), ready_timeout)
        except BaseException:
            handle.stop()
            raise
        return handle

    def _spawn(
        self,
        source: str | os.PathLike[str] | None,
        as_id: str | None,
        plugin_specs: Sequence[str],
        args: Sequence[str],
        env: dict[str, str] | None,
        ready_timeout: float,
    ) -> BotHandle:
        __tracebackhide__ = True
        command = [sys.executable, "-m", "callbot", "run"]
        if source is not None:
            command.append(os.fspath(source))
        command += ["--server", self._relay.url, "--state-dir", str(self._relay.state_dir)]
        if as_id:
            command += ["--as", as_id]
        for spec in plugin_specs:
            command += ["--plugin", spec]
        for address in _ice_addresses():
            command += ["--ice-address", address]
        command += list(args)
        environment = {**os.environ, **(env or {})}
        environment.pop("CALLBOT_TOKEN", None)  # the bot mints its own from the state dir
        environment.setdefault("PYTHONUNBUFFERED", "1")
        log = self._directory / f"bot-{next(self._count)}.log"
        with log.open("wb") as out:
            process = sp.Popen(command, stdout=out, stderr=sp.STDOUT, env=environment)
        handle = BotHandle(as_id or "?", process=process, log=log)
        deadline = time.monotonic() + ready_timeout
        while True:
            match = re.search(r"bot (\S+) ready", handle.output())
            if match:
                handle.user_id = match.group(1)
                return handle
            if process.poll() is not None or time.monotonic() > deadline:
                handle.stop()
                why = (
                    f"exited with status {process.returncode}"
                    if process.returncode not in (None, -signal.SIGTERM)
                    else f"not ready in {ready_timeout:g} s"
                )
                shown = " ".join(["callbot", *command[3:]])
                raise RuntimeError(f"`{shown}` {why}; its output:\n{handle.output()}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        errors = []
        for handle in reversed(self._started):
            try:
                handle.stop()
            except Exception as exc:  # stop the others anyway
                errors.append(exc)
        self._started.clear()
        if errors:
            raise errors[0]


# -- calls --------------------------------------------------------------------------------------


@dataclass
class CallResult:
    """What a call placed by `caller` did. `.report` is `callbot call --json`'s report."""

    report: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.report[key]

    @property
    def ok(self) -> bool:
        """Connected, ended normally, and every expectation held."""
        return bool(self.report["ok"])

    @property
    def connected(self) -> bool:
        return bool(self.report["connected"])

    @property
    def end_reason(self) -> str | None:
        return self.report.get("end_reason")

    @property
    def call_id(self) -> str | None:
        return self.report.get("call_id")

    @property
    def audio(self) -> Path | None:
        """The recording of the peer's audio."""
        entry = self.report.get("recordings", {}).get("audio")
        return Path(entry["path"]) if entry else None

    @property
    def video(self) -> Path | None:
        """The recording of the peer's video (video calls)."""
        entry = self.report.get("recordings", {}).get("video")
        return Path(entry["path"]) if entry else None

    @property
    def expectations(self) -> list[dict[str, Any]]:
        return list(self.report.get("expectations", []))

    @property
    def reason(self) -> str | None:
        """One line saying why the call is not ok (as `callbot call` prints), or None."""
        from .expectations import failure_reason

        return failure_reason(self.report)

    def assert_ok(self) -> CallResult:
        """Fail the test (with the one-line reason) unless the call is ok."""
        __tracebackhide__ = True
        if not self.ok:
            raise AssertionError(self.reason)
        return self


class Caller:
    """`caller(peer, ...)`: place a call through the test relay (see `__call__`)."""

    def __init__(self, loop: LoopThread, relay: CallbotRelay, directory: Path) -> None:
        self._loop = loop
        self._relay = relay
        self._directory = directory
        self._count = itertools.count(1)

    def plan(
        self,
        peer: str,
        *,
        play: str | os.PathLike[str] | None = None,
        play_video: str | os.PathLike[str] | None = None,
        loop: bool = False,
        record: str | os.PathLike[str] | None = _AUTO,
        record_video: str | os.PathLike[str] | None = _AUTO,
        video: bool = False,
        duration: float | None = None,
        timeout: float = 30.0,
        expect: Iterable[Expectation] = (),
        metadata: dict[str, Any] | None = None,
        user: str = "caller",
        server: str | None = None,
        token: str | None = None,
    ) -> Any:
        """The `CallPlan` that `__call__` runs (the same object `callbot call` builds)."""
        from ..config import CallConfig
        from ..ice import IceConfig
        from .smoke import CallPlan

        number = next(self._count)
        wants_video = video or play_video is not None or record_video not in (_AUTO, None)
        if record is _AUTO:
            record = self._directory / f"call-{number}.wav"
        if record_video is _AUTO:
            record_video = self._directory / f"call-{number}.webm" if wants_video else None
        return CallPlan(
            peer=peer,
            server=server or self._relay.url,
            token=token or (None if server else self._relay.mint(user)),
            user=user,
            play=None if play is None else Path(play),
            play_video=None if play_video is None else Path(play_video),
            loop=loop,
            record=None if record is None else Path(record),
            record_video=None if record_video is None else Path(record_video),
            duration=duration,
            timeout=timeout,
            video=video,
            metadata=dict(metadata or {}),
            config=CallConfig(ice=IceConfig(addresses=_ice_addresses())),
            expect=list(expect),
        )

    def __call__(self, peer: str, **options: Any) -> CallResult:
        """Call `peer`, play `play`/`play_video`, stay `duration` seconds (default: the
        playback plus 1 s, else 10), record the reply into tmp_path (`record=None` not to),
        check `expect` ([Expectation.tone(440), ...]); returns a `CallResult`.

        Options are `callbot call`'s: play, play_video, loop, record, record_video, video,
        duration, timeout (to connect), expect, metadata, user, server, token.
        """
        from .smoke import place_call

        plan = self.plan(peer, **options)
        wait = plan.timeout + (plan.duration or 0) + 600  # a stuck call fails, never hangs
        return CallResult(self._loop.run(place_call(plan), wait))

    async def acall(self, peer: str, **options: Any) -> CallResult:
        """`__call__` for async tests: awaits the call without blocking the test's loop."""
        from .smoke import place_call

        plan = self.plan(peer, **options)
        return CallResult(await asyncio.wrap_future(self._loop.submit(place_call(plan))))


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def callbot_loop() -> Iterator[LoopThread]:
    """The background event loop that runs the relay, in-process bots and calls."""
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def callbot_relay(
    callbot_loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CallbotRelay]:
    """An embedded relay on 127.0.0.1 (free port) with its own state dir: `.url`, `.mint()`."""
    from ..signaling.relay import Relay

    state_dir = tmp_path_factory.mktemp("callbot-relay")

    async def start() -> Relay:
        return await Relay("127.0.0.1", 0, state_dir).start()

    relay = callbot_loop.run(start(), 30)
    yield CallbotRelay(callbot_loop, relay, state_dir)
    callbot_loop.run(relay.stop(), 30)


@pytest.fixture
def bot_factory(
    callbot_loop: LoopThread, callbot_relay: CallbotRelay, tmp_path: Path
) -> Iterator[BotFactory]:
    """Start bots on `callbot_relay`: `bot_factory("bot.py")`, `bot_factory(as_id="echo",
    plugins=["echo"])`, `bot_factory("bot.py", subprocess=True)`; all stopped afterwards."""
    factory = BotFactory(callbot_loop, callbot_relay, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def caller(callbot_loop: LoopThread, callbot_relay: CallbotRelay, tmp_path: Path) -> Caller:
    """Place calls through `callbot_relay`: `result = caller("echo", play="a.wav")`."""
    return Caller(callbot_loop, callbot_relay, tmp_path)
