"""docs/howto/cluster.md's recipe, run line by line as written: Redis, three `callbot serve
--redis` nodes, a bot on one, a call with a tone check from another, a cluster revocation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import answers

from helpers import missing_peer

ROOT = Path(__file__).resolve().parents[2]
RECIPE = re.search(
    r"## Run three nodes.*?```sh\n(.*?)```", (ROOT / "docs/howto/cluster.md").read_text(), re.S
)
#: Lines that keep running (each in its own terminal in the guide).
BACKGROUND = ("redis-server ", "callbot serve ", "callbot run ")


@pytest.fixture
def background(tmp_path: Path) -> Iterator[list[subprocess.Popen]]:
    """Processes the recipe leaves running; stopped by PID at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _shell(line: str) -> list[str]:
    """`line` in bash, `callbot` being this checkout's (exec: a background line's PID is the
    command's own, so it is stopped by that PID)."""
    return ["bash", "-c", f'callbot() {{ exec {sys.executable} -m callbot "$@"; }}; {line}']


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return json.load(response)
    except OSError:
        return None


def _wait_ready(line: str, process: subprocess.Popen, log: Path) -> None:
    """Until what `line` starts answers (Redis PING, a node's /healthz, the bot connected)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        if line.startswith("redis-server"):
            if answers(int(re.search(r"--port (\d+)", line).group(1))):
                return
        elif line.startswith("callbot serve"):
            if _health(int(re.search(r"--port (\d+)", line).group(1))) is not None:
                return
        else:  # the bot: connected to its node, and the other nodes had a moment to learn it
            port = int(re.search(r"ws://127\.0\.0\.1:(\d+)/", line).group(1))
            if (_health(port) or {}).get("connections"):
                time.sleep(0.5)
                return
        time.sleep(0.1)
    raise AssertionError(f"{line!r} did not come up:\n{log.read_text()}")


def test_the_documented_cluster_recipe_works(tmp_path: Path, background) -> None:
    if shutil.which("redis-server") is None:
        missing_peer("no redis-server for the cluster recipe (apt-get install redis-server)")
    assert RECIPE is not None
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    env["CALLBOT_ICE_ADDRESSES"] = "127.0.0.1"
    for n, line in enumerate(RECIPE.group(1).strip().splitlines()):
        if line.startswith(BACKGROUND):
            log = tmp_path / f"background-{n}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    _shell(line), cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            background.append(process)
            _wait_ready(line, process, log)
        else:
            result = subprocess.run(_shell(line), cwd=tmp_path, env=env, capture_output=True,
                                    text=True, timeout=90)  # fmt: skip
            assert result.returncode == 0, (line, result.stdout, result.stderr)
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("background-*.log")))
    assert logs.count("sharing routing over redis://127.0.0.1:6379/0") == 3
