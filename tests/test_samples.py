"""The greeter and voicemail samples do what their docstrings say, run with the commands those
docstrings give (as subprocesses, on 127.0.0.1, the embedded relay on its default port)."""

from __future__ import annotations

import ast
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callbot.media import analysis
from callbot.testing import assert_tone

ROOT = Path(__file__).resolve().parents[1]


def documented_commands(sample: str) -> list[list[str]]:
    """The `callbot ...` lines of a sample's docstring, as argument lists."""
    tree = ast.parse((ROOT / "samples" / sample).read_text())
    doc = ast.get_docstring(tree) or ""
    lines = [line.strip() for line in doc.splitlines() if line.strip().startswith("callbot ")]
    return [[sys.executable, "-m", "callbot", *shlex.split(line)[1:]] for line in lines]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory like a checkout's root (samples/ in it) where the samples write."""
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    return tmp_path


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The environment for callbot subprocesses (conftest's `cli_env`)."""
    return cli_env


def _wait_for(log: Path, pattern: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if re.search(pattern, log.read_text()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in:\n{log.read_text()}")


def run_documented(sample: str, bot: str, workdir: Path, env: dict[str, str]) -> Iterator[None]:
    """Start the sample's `callbot run` line, wait until the bot is ready, place its
    `callbot call` line (which must succeed), stop the bot. (Its `--scenario` line:
    tests/scenario/test_samples_scenarios.py.)"""
    run, call = [c for c in documented_commands(sample) if "--scenario" not in c]
    assert run[3] == "run" and call[3] == "call", (run, call)
    log = workdir / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(run, cwd=workdir, env=env, stdout=out, stderr=out)
    try:
        _wait_for(log, f"bot {bot} ready", process)
        result = subprocess.run(call, cwd=workdir, env=env, capture_output=True, text=True,
                                timeout=90)  # fmt: skip
        assert result.returncode == 0, result.stderr
        yield
    finally:
        process.send_signal(signal.SIGTERM)  # the process started here, by PID
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_greeter_records_the_caller(workdir: Path, env: dict[str, str]) -> None:
    for _ in run_documented("greeter.py", "greeter", workdir, env):
        assert_tone(workdir / "heard.wav", 1000.0)  # what the caller heard ends with the beep
    (recording,) = (workdir / "recordings").glob("*.wav")
    assert_tone(recording, 440.0, min_seconds=1.5)  # the caller's 2 s tone, not silence


def test_voicemail_keeps_the_message(workdir: Path, env: dict[str, str]) -> None:
    for _ in run_documented("voicemail_bot.py", "voicemail", workdir, env):
        pass
    (facts_file,) = (workdir / "voicemail").glob("*.json")
    facts = json.loads(facts_file.read_text())
    assert facts["caller"] == "caller" and facts["ended_by"] == "silence", facts
    message = workdir / "voicemail" / facts["audio"]
    assert analysis.level_dbfs(message) > -40  # the caller's words, not digital silence
    assert analysis.active_seconds(message) > 1.0
