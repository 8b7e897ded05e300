"""Every benchmark command docs/performance.md gives runs, at a small scale, and prints (or
writes) the result the page describes. No timing is asserted: a benchmark's figures are its
own business; this only keeps the documented commands working."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "performance.md"

#: Per script: options appended to the documented command (the last one given wins) to make
#: it small, and text its output must contain.
SMALL: dict[str, tuple[list[str], list[str]]] = {
    "density.py": (
        ["--aiortc", "1", "--callbot", "2", "--workers2", "", "--seconds", "2", "--warmup", "1",
         "--repeat", "1"],
        ["cpu/call %", "real-time"],
    ),
    "packet_cost.py": (
        ["--calls", "2", "--seconds", "1", "--repeat", "1", "--warmup", "0.5"],
        ["µs of CPU per packet"],
    ),
    "video_record.py": (["--calls", "1", "--seconds", "3"], ["webm"]),
    "setup_latency.py": (["--sequential", "2", "--burst", "2"], ["median"]),
    "latency.py": (["--clicks", "2"], ["median"]),
    "cluster_setup.py": (
        ["--pairs", "2", "--seconds", "1", "--clients", "10", "--calls", "3"],
        ["setups/s", "across nodes"],
    ),
    "voice.py": (["--rounds", "1", "--calls", "1", "--seconds", "1"], ["end->transcript p50 ms"]),
    "spike/native_pump.py": (
        ["--calls", "4", "--ticks", "10", "--repeat", "1"],
        ["python per packet", "native per batch"],
    ),
}  # fmt: skip


def documented() -> list[str]:
    """The `python benchmarks/...` commands of the page, in order."""
    return re.findall(r"`(python benchmarks/[^`]+)`", PAGE.read_text())


def small_key(command: str) -> str:
    """The script and the flags of `command` beyond its SMALL overrides: what its small run
    is (also its test id, short enough for pytest to show and `-k` to select)."""
    words = shlex.split(command)
    script = words[1].removeprefix("benchmarks/")
    small = set(SMALL.get(script, ([], []))[0])
    return " ".join(
        [script, *sorted(w for w in words[2:] if w.startswith("--") and w not in small)]
    )


def distinct() -> list[str]:
    """The documented commands that differ once made small: the same script with the same
    flags beyond those SMALL overrides runs the same small benchmark, so it runs once."""
    seen: dict[str, str] = {}
    for command in documented():
        seen.setdefault(small_key(command), command)
    return list(seen.values())


def test_every_documented_benchmark_is_run_here() -> None:
    scripts = {shlex.split(command)[1].removeprefix("benchmarks/") for command in documented()}
    assert scripts, "no commands found in docs/performance.md"
    assert scripts <= set(SMALL), f"documented but not run by this test: {scripts - set(SMALL)}"


@pytest.mark.timeout(300)  # a benchmark starts processes (cluster_setup.py: five relays)
@pytest.mark.parametrize("command", distinct(), ids=small_key)
def test_documented_benchmark_runs_small(command: str, tmp_path: Path, cli_env) -> None:
    words = shlex.split(command)
    script = words[1].removeprefix("benchmarks/")
    if script.startswith("spike/") and shutil.which("gcc") is None:
        pytest.skip("the native spike builds pump.c: needs gcc (Debian package gcc)")
    if "--pin" in words and len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2:
        pytest.skip("--pin puts the bot on CPUs of its own: needs Linux and 2 CPUs or more")
    extra, expected = SMALL[script]
    args = _in(tmp_path, words[2:])
    result = subprocess.run(
        [sys.executable, words[1], *args, *extra],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected + (["pinned: bot (and --load) on CPUs"] if "--pin" in words else []):
        assert text in result.stdout, result.stdout[-3000:]
    assert "bot processes not on CPUs" not in result.stdout  # --pin's check during the window
    if "--json" in args:
        points = json.loads(Path(args[args.index("--json") + 1]).read_text())["points"]
        assert [p["impl"] for p in points] == ["aiortc", "callbot"]
        assert all(p["cpu_per_call"] > 0 and p["failed_calls"] is not None for p in points)


def _in(directory: Path, args: list[str]) -> list[str]:
    """The documented options with the files they write moved into `directory`, and one busy
    process at most (`--load`: the test machine is shared)."""
    out = list(args)
    for index, word in enumerate(out[:-1]):
        if word in ("--json", "--keep"):
            out[index + 1] = str(directory / Path(out[index + 1]).name)
        elif word == "--load":
            out[index + 1] = "1"
    return out


def test_pin_gives_the_bot_the_first_half_of_the_cpus() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from density import Pinning

    assert Pinning.split({0, 1}) == Pinning(frozenset({0}), frozenset({1}))
    assert Pinning.split({2, 3, 5, 7}) == Pinning(frozenset({2, 3}), frozenset({5, 7}))
    assert Pinning.split({0, 1, 2}).bot == frozenset({0})
    with pytest.raises(SystemExit, match="at least 2 CPUs"):
        Pinning.split({0})
