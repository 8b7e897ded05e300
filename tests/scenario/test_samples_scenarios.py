"""Every sample bot passes its scenario (samples/*.yaml), run with the command its docstring
gives (`callbot call PEER --scenario samples/NAME.yaml`, subprocesses on 127.0.0.1); a wrong
expectation fails naming the step. (The IVR at 5 % loss: tests/scenario/test_scenarios_doc.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_samples import ROOT, _wait_for, documented_commands

from callbot.scenario import words
from callbot.testing.generate import espeak_available

pytestmark = [
    pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (Debian package espeak-ng)"),
    pytest.mark.skipif(words.available() is not None, reason="needs pocketsphinx (callbot[voice])"),
]

SAMPLES = {"echo_bot.py": "echo", "greeter.py": "greeter", "ivr_bot.py": "desk",
           "voicemail_bot.py": "voicemail"}  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    return tmp_path


def running(sample: str, workdir: Path, env: dict[str, str]) -> Iterator[list[str]]:
    """Start the sample's documented `callbot run` line; yield its `--scenario` call line."""
    commands = documented_commands(sample)
    run = next(c for c in commands if c[3] == "run")
    (call,) = [c for c in commands if "--scenario" in c]
    log = workdir / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(run, cwd=workdir, env=env, stdout=out, stderr=out)
    try:
        _wait_for(log, f"bot {SAMPLES[sample]} ready", process)
        yield call
    finally:
        process.send_signal(signal.SIGTERM)  # the process started here, by PID
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def call(command: list[str], workdir: Path, env: dict[str, str], *extra: str):
    return subprocess.run([*command, *extra], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.timeout(300)  # the IVR's call lasts ~30 s
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_sample_passes_its_scenario(sample: str, workdir: Path, cli_env: dict[str, str]) -> None:
    for command in running(sample, workdir, cli_env):
        done = call(command, workdir, cli_env, "--json", "--junit", "steps.xml")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["scenario"]["ok"] and all(s["ok"] for s in report["steps"]), report
        assert report["grades"]["mos"] > 3.5, report["grades"]
        cases = ET.parse(workdir / "steps.xml").getroot().iter("testcase")
        names = [case.get("name") for case in cases]
        assert names[1:] == [f"step {s['step']}: {s['text']}" for s in report["steps"]]
    if sample == "greeter.py":  # the greeter recorded what the scenario played
        from callbot.testing import assert_tone

        (recording,) = (workdir / "recordings").glob("*.wav")
        assert_tone(recording, 440.0, min_seconds=1.5)
    if sample == "voicemail_bot.py":  # the message was kept, ended by the caller's silence
        (facts_file,) = (workdir / "voicemail").glob("*.json")
        assert json.loads(facts_file.read_text())["ended_by"] == "silence"


@pytest.mark.timeout(300)  # four short calls
def test_wrong_expectations_fail_naming_the_step(workdir: Path, cli_env: dict[str, str]) -> None:
    """Against the echo sample: a wrong tone, digit, word or MOS each stop the run with exit 1
    and one line naming the step and what was heard."""
    tone = "play samples/tone-440.wav"
    wrong = {  # step: (the step before it, what the failure line says)
        "expect tone 1000 within 1s": (tone, "expected a 1000 Hz tone within 1 s; heard: no "
                                             "1000 Hz tone (strongest 44"),
        "expect dtmf 7 within 2s": ("dtmf 1 inband", "expected DTMF '7' within 2 s; heard DTMF "
                                                     "'1"),
        "expect speech 'billing' within 3s": ("say 'press two'", "expected 'billing'"),
        "expect mos >= 4.5": (tone, "expected MOS >= 4.5;"),
    }  # fmt: skip
    for command in running("echo_bot.py", workdir, cli_env):
        base = command[: command.index("--scenario")]
        for step, (first, message) in wrong.items():
            done = call(base, workdir, cli_env, "--step", first, "--step", step)
            assert done.returncode == 1, (step, done.stderr)
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith(f"step 2 (--step 2) `{step}` failed: "), last
            assert message in last, last


def test_ivr_keys_from_a_file_with_a_lead_in(workdir: Path, cli_env: dict[str, str]) -> None:
    """The IVR docstring's scenario-less lines: keys after 3 s of silence reach the menu (1:
    information, 9: hang up), so the IVR hangs up on the caller."""
    commands = documented_commands("ivr_bot.py")
    media, play = [c for c in commands if c[3] == "media" or "--play" in c]
    for _ in running("ivr_bot.py", workdir, cli_env):
        assert call(media, workdir, cli_env).returncode == 0
        done = call(play, workdir, cli_env)
        assert done.returncode == 0, done.stderr
        assert "ended: remote_hangup" in done.stderr, done.stderr
