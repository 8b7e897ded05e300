"""`callbot call --expect-* --junit` as a CI job runs it: `callbot serve`, a bot from
`callbot run`, and `callbot call`, each a real subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from callbot.testing import generate

ROOT = Path(__file__).resolve().parents[2]
CALLBOT = [sys.executable, "-m", "callbot"]
RATE = 48000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """A relay and an echo bot (subprocesses we started, stopped by PID) and a way to call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = dict(os.environ)
        self.env.update(CALLBOT_STATE_DIR=str(directory / "state"), TMPDIR=str(directory / "tmp"))
        self.env.pop("CALLBOT_SERVER", None)
        self.env.pop("CALLBOT_TOKEN", None)
        (directory / "tmp").mkdir()
        self.url = f"ws://127.0.0.1:{_free_port()}/ws"
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *args: str, ready: str) -> None:
        log = self.directory / f"proc-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([*CALLBOT, *args], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=ROOT, env=self.env)  # fmt: skip
        self.procs.append((proc, log))
        deadline = time.monotonic() + 30
        while ready not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def call(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CALLBOT, "call", *args, "--server", self.url], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=90)  # fmt: skip

    def scratch(self) -> list[Path]:
        """Temporary recording directories `callbot call` left behind."""
        return sorted((self.directory / "tmp").glob("callbot-call-*"))

    def stop(self) -> None:
        for proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"))
    port = stack.url.split(":")[2].split("/")[0]
    try:
        stack.start("serve", "--port", port, ready="relay listening")
        stack.start("run", "--as", "echo", "--plugin", "echo", "--server", stack.url,
                    ready="bot echo ready")  # fmt: skip
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def keys_and_tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.2 s of 440 Hz, a short pause, then DTMF 159#."""
    samples = np.concatenate([generate.tone_samples(440, 1.2, RATE),
                              np.zeros(RATE // 5, np.float32),
                              generate.dtmf_samples("159#", RATE)])  # fmt: skip
    return generate.write_audio(tmp_path_factory.mktemp("fixtures") / "keys.wav", samples)


def _junit(path: Path) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    return suite, {case.get("name"): case for case in suite.findall("testcase")}


def test_expectations_that_hold(stack: Stack, keys_and_tone: Path, tmp_path: Path) -> None:
    junit = tmp_path / "reports" / "call.xml"
    result = stack.call("echo", "--play", str(keys_and_tone), "--expect-tone", "440",
                        "--expect-dtmf", "159#", "--junit", str(junit), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["end_reason"] == "hangup"
    assert [(e["name"], e["ok"]) for e in report["expectations"]] == [
        ("tone 440 Hz", True),
        ("DTMF 159#", True),
    ]
    assert report["expectations"][1]["measured"]["heard"] == "159#"
    recorded = report["recordings"]["audio"]
    assert recorded["temporary"] and abs(recorded["dominant_hz"] - 440) < 5
    assert not Path(recorded["path"]).exists() and stack.scratch() == []  # cleaned up
    suite, cases = _junit(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "0", "0")
    assert list(cases) == ["connected and ended normally", "expect tone 440 Hz", "expect DTMF 159#"]
    assert all(case.find("failure") is None for case in cases.values())
    assert "heard DTMF '159#'" in cases["expect DTMF 159#"].findtext("system-out")


def test_failing_expectation_exits_1_with_one_line_reason(
    stack: Stack, keys_and_tone: Path, tmp_path: Path
) -> None:
    junit = tmp_path / "call.xml"
    result = stack.call("echo", "--play", str(keys_and_tone), "--expect-tone", "440",
                        "--expect-tone", "1000", "--expect-dtmf", "1234",
                        "--junit", str(junit))  # fmt: skip
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"2 expectations failed: tone 1000 Hz: \S+/audio\.wav: no 1000 Hz tone \(strongest "
        r"440\.\d Hz at -\d+\.\d dBFS; 1000 Hz at -\d+\.\d dBFS, need -40\); DTMF 1234: "
        r"\S+/audio\.wav: expected DTMF '1234', heard '159#' \(1 at \d\.\d\d s, .*\)",
        last,
    ), last
    assert "expect tone 440 Hz: ok" in result.stderr
    (kept,) = stack.scratch()  # a failure keeps the recording it was judged on
    assert (kept / "audio.wav").exists() and str(kept) in last
    suite, cases = _junit(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "0")
    assert cases["connected and ended normally"].find("failure") is None
    assert cases["expect tone 440 Hz"].find("failure") is None
    failure = cases["expect tone 1000 Hz"].find("failure")
    assert failure is not None and "no 1000 Hz tone (strongest 440" in failure.get("message")
    assert "heard '159#'" in cases["expect DTMF 1234"].find("failure").get("message")
    for path in kept.iterdir():
        path.unlink()
    kept.rmdir()


def test_video_and_speech_expectations(stack: Stack, tmp_path: Path) -> None:
    clip = generate.write_video(tmp_path / "clip.webm", 1.5, (320, 240), 15, tone=1000)
    out = tmp_path / "back.webm"
    result = stack.call("echo", "--play-video", str(clip), "--record-video", str(out),
                        "--expect-video-frames", "20", "--expect-tone", "1000",
                        "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    frames = report["expectations"][1]["measured"]["frames"]
    assert report["expectations"][1]["name"] == "at least 20 video frames" and frames >= 20
    assert out.exists() and report["recordings"]["video"]["path"] == str(out)  # kept: ours
    voice = tmp_path / "voice.wav"
    generate.write_audio(voice, generate.speech_samples(2.5, RATE))
    spoken = stack.call("echo", "--play", str(voice), "--expect-speech")
    assert spoken.returncode == 0, spoken.stderr
    assert re.search(r"expect speech: ok: \S+audio\.wav: speech-like \(", spoken.stderr)
    too_many = stack.call("echo", "--expect-video-frames", "1000", "--duration", "1")
    assert too_many.returncode == 1
    assert re.search(r"expectation failed: at least 1000 video frames: \S+video\.webm: \d+ "
                     r"video frames of 640x480 \(expected at least 1000 frames\)\n?$",
                     too_many.stderr)  # fmt: skip
    for kept in stack.scratch():  # the failure kept its recordings
        for path in kept.iterdir():
            path.unlink()
        kept.rmdir()


def test_call_that_never_connects(stack: Stack, tmp_path: Path) -> None:
    junit = tmp_path / "call.xml"
    result = stack.call("nobody", "--expect-tone", "440", "--junit", str(junit), "--json")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("call to nobody failed: user_offline")
    report = json.loads(result.stdout)
    assert report["recordings"] == {} and stack.scratch() == []
    suite, cases = _junit(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "1")
    message = cases["connected and ended normally"].find("failure").get("message")
    assert message.startswith("call to nobody failed: user_offline")
    skipped = cases["expect tone 440 Hz"].find("skipped").get("message")
    assert skipped.startswith("not checked: the call did not connect (user_offline")
    usage = stack.call("echo", "--expect-dtmf", "12x")
    assert usage.returncode == 2 and "not a DTMF key" in usage.stderr


def test_unreachable_relay_still_writes_junit(tmp_path: Path) -> None:
    junit = tmp_path / "call.xml"
    env = {**os.environ, "CALLBOT_STATE_DIR": str(tmp_path / "state")}
    began = time.monotonic()
    result = subprocess.run([*CALLBOT, "call", "echo", "--server",
                             f"ws://127.0.0.1:{_free_port()}/ws", "--timeout", "1.5",
                             "--junit", str(junit)],
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert time.monotonic() - began < 8  # --timeout bounds the wait for the relay too
    assert "unreachable" in result.stderr
    suite, cases = _junit(junit)
    assert suite.get("failures") == "1"
    assert "unreachable" in cases["connected and ended normally"].find("failure").get("message")
