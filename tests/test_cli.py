"""The CLI as a user runs it: `callbot serve`, `callbot run`, `callbot call`, `callbot token`,
each a real subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callbot.testing import generate

from helpers import facts_of

ROOT = Path(__file__).resolve().parents[1]
CALLBOT = [sys.executable, "-m", "callbot"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Proc:
    """A background `callbot` process whose stderr goes to a file we can wait on."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.handle = log.open("w")
        self.popen = subprocess.Popen([*CALLBOT, *args], stdout=self.handle,
                                      stderr=subprocess.STDOUT, cwd=ROOT, env=env)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in output:\n{self.output()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # this PID only: we started it
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.handle.close()


@pytest.fixture
def spawn(tmp_path: Path, cli_env: dict[str, str]) -> Iterator:
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(list(args), tmp_path / f"proc-{len(started)}.log", cli_env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def _callbot(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CALLBOT, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)  # fmt: skip


@pytest.fixture
def relay_url(spawn) -> str:
    port = _free_port()
    spawn("serve", "--port", str(port)).wait_for("relay listening")
    return f"ws://127.0.0.1:{port}/ws"


def test_serve_run_and_call_echo_as_a_user_would(
    relay_url: str, spawn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    tone = generate.write_tone(tmp_path / "tone.wav", 440.0, seconds=3.0)
    spawn("run", "samples/echo_bot.py", "--server", relay_url).wait_for("bot echo ready")
    out = tmp_path / "out.wav"
    result = _callbot(cli_env, "call", "echo", "--server", relay_url, "--play", str(tone),
                      "--record", str(out), "--duration", "4", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["connected"] and report["end_reason"] == "hangup"
    assert 3.5 < report["seconds"] < 6
    assert report["received"]["audio"]["packets"] > 150
    assert report["sent"]["audio"]["packets"] > 150
    recorded = report["recordings"]["audio"]
    assert recorded["path"] == str(out) and abs(recorded["dominant_hz"] - 440) <= 5
    assert recorded["level_dbfs"] > -30


def test_ivr_sample_follows_keys_played_by_callbot_call(
    relay_url: str, spawn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """samples/ivr_bot.py's docstring: keys in a wav, played by `callbot call` (callbot to
    callbot negotiates RFC 4733, the keys are tones in the audio); 9 makes the IVR hang up."""
    spawn("run", "samples/ivr_bot.py", "--server", relay_url).wait_for("bot desk ready")
    keys = tmp_path / "keys.wav"
    made = _callbot(cli_env, "media", "dtmf", str(keys), "--digits", "9")
    assert made.returncode == 0, made.stderr
    result = _callbot(cli_env, "call", "desk", "--server", relay_url, "--play", str(keys),
                      "--duration", "10", "--json")  # fmt: skip
    report = json.loads(result.stdout)
    assert report["connected"] and report["end_reason"] == "remote_hangup", report
    assert report["seconds"] < 5  # the IVR hung up on the key, not our 10 s


def test_call_to_nobody_fails_with_a_reason(relay_url: str, cli_env: dict[str, str]) -> None:
    result = _callbot(cli_env, "call", "nobody", "--server", relay_url, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["ok"] and not report["connected"]
    assert "user_offline" in report["error"]
    assert "user_offline" in result.stderr


def test_two_workers_of_one_bot_share_calls(
    relay_url: str, spawn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    workers = [spawn("run", "--as", "pool", "--plugin", "echo", "--server", relay_url)
               for _ in range(2)]  # fmt: skip
    pids = [int(w.wait_for(r"bot pool ready \(pid (\d+)\)").group(1)) for w in workers]
    # ten calls, all up at the same time, from one caller process
    script = tmp_path / "caller.py"
    script.write_text(
        "import asyncio, sys\n"
        "from callbot import Bot\n"
        "async def main():\n"
        "    bot = Bot('alice', server=sys.argv[1], role='user')\n"
        "    await bot.start()\n"
        "    calls = [await bot.call('pool') for _ in range(10)]\n"
        "    await asyncio.gather(*(c.wait_connected(20) for c in calls))\n"
        "    await asyncio.gather(*(c.hangup() for c in calls))\n"
        "    await bot.stop()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, str(script), relay_url], env=cli_env, cwd=ROOT,
                            capture_output=True, text=True, timeout=90)  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts = {}
    for worker, pid in zip(workers, pids, strict=True):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts[pid] = len(
                re.findall(rf"pool\[{pid}\]: call \w+ with alice ended", worker.output())
            )
            if sum(counts.values()) == 10:
                break
            time.sleep(0.1)
    assert sum(counts.values()) == 10, counts
    assert all(n > 0 for n in counts.values()), counts  # each worker took some


def test_run_alone_with_embedded_relay_and_plugins(
    spawn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    marker = tmp_path / "marker.txt"
    plugin = tmp_path / "mark.py"
    plugin.write_text(
        "from pathlib import Path\n"
        "def setup(bot, path: Path, word: str = 'hi'):\n"
        "    path.write_text(f'{bot.user_id}:{word}')\n"
    )
    recordings = tmp_path / "recs"
    bot = spawn(
        "run", "--as", "desk", "--port", str(port),
        "--plugin", "autoaccept",
        "--plugin", f"record:dir={recordings},video=false",
        "--plugin", f"{plugin}:path={marker},word=hello",
    )  # fmt: skip
    bot.wait_for("bot desk ready")
    assert "relay listening on ws://127.0.0.1" in bot.output()
    assert marker.read_text() == "desk:hello"
    tone = generate.write_tone(tmp_path / "t.wav", 330.0, seconds=1.0)
    # no --server: the default is the local relay; no --token: minted from the shared state dir
    result = _callbot(cli_env, "call", "desk", "--server", f"ws://127.0.0.1:{port}/ws",
                      "--play", str(tone), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr + bot.output()
    call_id = json.loads(result.stdout)["call_id"]
    bot.wait_for(rf"call {call_id} with caller ended")
    (facts,) = facts_of(recordings, call_id)  # files named by the bot, found by call id
    assert facts["end_reason"] == "remote_hangup" and facts["video"] is None
    from callbot.media import analysis

    assert abs(analysis.dominant_frequency(recordings / facts["audio"]) - 330) <= 5


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("nosuch", "unknown plugin 'nosuch' (known: autoaccept, echo, ivr, prompt, record"),
        ("record:colour=red", "plugin record has no option 'colour'"),
        ("record:video=perhaps", "option video='perhaps': expected true or false"),
        ("prompt", "plugin prompt needs option(s) file"),
    ],
)
def test_bad_plugins_are_clear_errors(cli_env: dict[str, str], plugin: str, message: str) -> None:
    result = _callbot(cli_env, "run", "--as", "x", "--port", str(_free_port()), "--plugin", plugin)
    assert result.returncode == 1
    assert message in result.stderr


@pytest.mark.parametrize("flag", [["--workers", "2"], []], ids=["flag", "default"])
def test_workers_flag_runs_a_pool(spawn, cli_env: dict[str, str], flag: list[str]) -> None:
    """`--workers N` runs N processes; without it (and CALLBOT_WORKERS), one per core."""
    cli_env.pop("CALLBOT_WORKERS", None)
    count = int(flag[1]) if flag else os.cpu_count() or 1
    if count == 1:
        pytest.skip("a one-core machine runs a single process by default")
    port = _free_port()
    supervisor = spawn("run", "--as", "duo", "--plugin", "echo", *flag, "--port", str(port))
    supervisor.wait_for(rf"started {count} workers")
    deadline = time.monotonic() + 30
    while len(re.findall(r"bot duo ready", supervisor.output())) < count:
        assert time.monotonic() < deadline, supervisor.output()
        time.sleep(0.1)
    result = _callbot(cli_env, "call", "duo", "--server", f"ws://127.0.0.1:{port}/ws",
                      "--duration", "1", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    supervisor.stop()
    assert supervisor.popen.returncode == 0, supervisor.output()


def test_pool_workers_end_when_the_supervisor_is_killed(spawn, cli_env: dict[str, str]) -> None:
    supervisor = spawn("run", "--as", "trio", "--plugin", "echo", "--workers", "2",
                       "--port", str(_free_port()))  # fmt: skip
    pids = [
        int(p) for p in supervisor.wait_for(r"started 2 workers: pids \[(\d+), (\d+)\]").groups()
    ]
    deadline = time.monotonic() + 30
    while len(re.findall(r"bot trio ready", supervisor.output())) < 2:
        assert time.monotonic() < deadline, supervisor.output()
        time.sleep(0.1)
    supervisor.popen.kill()  # SIGKILL: no chance to stop its workers itself
    supervisor.popen.wait()
    deadline = time.monotonic() + 15
    try:
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.1)
    finally:
        for pid in pids:  # the workers this test started, if the assertion above failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_token_create_and_revoke(relay_url: str, cli_env: dict[str, str], spawn) -> None:
    spawn("run", "--as", "desk", "--plugin", "autoaccept", "--server", relay_url).wait_for(
        "bot desk ready"
    )
    created = _callbot(cli_env, "token", "create", "alice", "--ttl", "15m")
    assert created.returncode == 0
    token = created.stdout.strip()
    assert token.count(".") == 2
    ok = _callbot(cli_env, "call", "desk", "--server", relay_url, "--token", token,
                  "--duration", "0.5")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    revoked = _callbot(cli_env, "token", "revoke", "alice")
    assert revoked.returncode == 0
    refused = _callbot(cli_env, "call", "desk", "--server", relay_url, "--token", token)
    assert refused.returncode == 1
    assert "session_revoked" in refused.stderr
    bad_ttl = _callbot(cli_env, "token", "create", "alice", "--ttl", "soon")
    assert bad_ttl.returncode == 2 and "not a duration" in bad_ttl.stderr


def test_bot_pool_needs_a_token_created_for_the_bot_role(
    relay_url: str, cli_env: dict[str, str], spawn
) -> None:
    user_token = _callbot(cli_env, "token", "create", "desk").stdout.strip()
    refused = _callbot(cli_env, "run", "--as", "desk", "--plugin", "autoaccept",
                       "--server", relay_url, "--token", user_token)  # fmt: skip
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr and "--role bot" in refused.stderr
    created = _callbot(cli_env, "token", "create", "desk", "--role", "bot", "--ttl", "1h")
    assert created.returncode == 0 and "softphone" not in created.stderr
    spawn("run", "--as", "desk", "--plugin", "autoaccept", "--server", relay_url,
          "--token", created.stdout.strip()).wait_for("bot desk ready")  # fmt: skip
    ok = _callbot(cli_env, "call", "desk", "--server", relay_url, "--duration", "0.5")
    assert ok.returncode == 0, ok.stderr


def test_every_command_has_an_example_in_its_help(cli_env: dict[str, str]) -> None:
    for command in (["run"], ["serve"], ["call"], ["demo"], ["keygen"], ["token", "create"],
                    ["token", "revoke"], []):  # fmt: skip
        result = _callbot(cli_env, *command, "--help")
        assert result.returncode == 0
        assert "Example" in result.stdout, command
        assert "callbot " in result.stdout.split("Example", 1)[1], command


def test_keygen_and_signed_calls_from_the_command_line(
    relay_url: str, spawn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    peers = tmp_path / "known_peers"
    lines = []
    for user in ("desk", "caller"):
        made = _callbot(cli_env, "keygen", str(tmp_path / f"{user}.key"), "--user", user)
        assert made.returncode == 0, made.stderr
        assert (tmp_path / f"{user}.key").stat().st_mode & 0o777 == 0o600
        lines.append(made.stdout.strip())
    peers.write_text("\n".join(lines) + "\n")
    again = _callbot(cli_env, "keygen", str(tmp_path / "desk.key"))
    assert again.returncode == 1 and "exists" in again.stderr
    trust = ["--known-peers", str(peers), "--require-signatures"]
    spawn("run", "--as", "desk", "--plugin", "autoaccept", "--server", relay_url,
          "--identity", str(tmp_path / "desk.key"), *trust).wait_for("bot desk ready")  # fmt: skip
    signed = _callbot(cli_env, "call", "desk", "--server", relay_url, "--duration", "0.5",
                      "--identity", str(tmp_path / "caller.key"), *trust, "--json",
                      "--require-verified")  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["peer_verified"] is True
    # desk's answer is signed, but this caller pins no key: not verified, so --require-verified
    # fails (what a relay in the middle stripping signatures would get too)
    unverified = _callbot(cli_env, "call", "desk", "--server", relay_url, "--duration", "0.5",
                          "--identity", str(tmp_path / "caller.key"), "--known-peers",
                          str(tmp_path / "none"), "--require-verified")  # fmt: skip
    assert unverified.returncode == 1, unverified.stderr
    assert "desk is not verified" in unverified.stderr and "peer verified: False" in (
        unverified.stderr
    )
    unsigned = _callbot(cli_env, "call", "desk", "--server", relay_url, "--duration", "0.5")
    assert unsigned.returncode == 1
    assert "unsigned" in unsigned.stderr or "unsigned" in unsigned.stdout
