"""What `callbot run` and `bot.run()` print: a taken port in one line, and a ready line whose
`callbot call` command works as printed (subprocesses on 127.0.0.1)."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CALLBOT = [sys.executable, "-m", "callbot"]
READY = r"bot (\S+) ready \(pid \d+\); call it with: (.+)"


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The environment for callbot subprocesses (conftest's `cli_env`)."""
    return cli_env


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def start(tmp_path: Path, env: dict[str, str]) -> Iterator:
    """Start a background process (stdout+stderr to a log); stopped by PID at the end."""
    started: list[tuple[subprocess.Popen, Path]] = []

    def run(*command: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"log-{len(started)}.txt"
        with log.open("w") as out:
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
        started.append((process, log))
        return process, log

    yield run
    for process, _ in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ready_command(process: subprocess.Popen, log: Path, timeout: float = 30) -> list[str]:
    """The `callbot call ...` the ready line says to run, as an argument list."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if match := re.search(READY, log.read_text()):
            command = shlex.split(match.group(2))
            assert command[:2] == ["callbot", "call"], command
            return [*CALLBOT, *command[1:]]
        time.sleep(0.05)
    raise AssertionError(f"no ready line in:\n{log.read_text()}")


def _call_works(command: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run([*command, "--duration", "1"], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_one_line(
    taken_port: int, env: dict[str, str], tmp_path: Path, workers: str
) -> None:
    result = subprocess.run(
        [*CALLBOT, "run", "--as", "echo", "--plugin", "echo", "--port", str(taken_port),
         "--workers", workers],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f"127.0.0.1:{taken_port}" in lines[0] and "--port" in lines[0]
    assert "address already in use" in lines[0]


def test_the_ready_line_on_another_port_calls_the_bot(
    start, env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process, log = start(*CALLBOT, "run", "--as", "echo", "--plugin", "echo", "--port", str(port))
    command = _ready_command(process, log)
    assert f"--server ws://127.0.0.1:{port}/ws" in shlex.join(command)
    _call_works(command, env, tmp_path)


def test_bot_run_in_a_script_says_it_is_ready(start, env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "scripted.py"
    script.write_text(
        'from callbot import Bot\n\nbot = Bot("scripted")\nbot.use("echo")\nbot.run()\n'
    )
    process, log = start(sys.executable, str(script))
    command = _ready_command(process, log)  # the default relay address: no --server needed
    assert command[len(CALLBOT) :] == ["call", "scripted"]
    _call_works(command, env, tmp_path)
