"""docs/howto/scenarios.md does what it says: its GitHub Actions job's steps (after the
install) run as written against the IVR sample, over WebRTC (which passes its scenario at 5 %
loss too, with a lower MOS) and over SIP (graded from RTCP; a wrong expectation fails naming its
step), then every `callbot` command of its shell blocks, and its pytest example passes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from callbot.scenario import words
from callbot.testing.generate import espeak_available

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "howto" / "scenarios.md").read_text()

pytestmark = [
    pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (Debian package espeak-ng)"),
    pytest.mark.skipif(words.available() is not None, reason="needs pocketsphinx (callbot[voice])"),
    pytest.mark.skipif(importlib.util.find_spec("baresip") is None, reason="callbot[sip]"),
]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC, re.S | re.M)


def shell_commands() -> list[str]:
    """The `callbot ...` lines of the doc's ```sh blocks, in order."""
    return [line for block in blocks("sh") for line in block.splitlines()
            if line.startswith("callbot ")]  # fmt: skip


def test_the_example_file_is_the_sample() -> None:
    shown = blocks("yaml")[0]
    sample = (ROOT / "samples" / "ivr.yaml").read_text()
    assert sample.endswith(shown), "docs/howto/scenarios.md shows samples/ivr.yaml as it is"


@pytest.mark.timeout(600)  # five IVR calls of ~20-30 s each, more on a loaded machine
def test_the_workflow_and_the_commands_run(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "callbot").symlink_to(ROOT)  # the job checks callbot out into ./callbot
    (tmp_path / "samples").symlink_to(ROOT / "samples")  # the commands run from a checkout
    (job,) = yaml.safe_load(blocks("yaml")[-1])["jobs"].values()
    env = {**cli_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_env['PATH']}"}
    env.update({k: v.replace("${{ github.workspace }}", str(tmp_path))
                for k, v in job["env"].items()})  # fmt: skip
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert "pip install './callbot[voice,sip]'" in runs[0]  # installing is not re-done here
    script = "set -e\n" + "\n".join(runs[1:])
    shell = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, env=env,
                             start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        out, _ = shell.communicate(timeout=300)
        assert shell.returncode == 0, out
        assert re.search(r"^MOS [0-9.]+$", out, re.M), out
        for name in ("ivr", "ivr-lossy", "ivr-sip"):
            report = json.loads((tmp_path / "reports" / f"{name}.json").read_text())
            assert report["scenario"]["ok"], report["scenario"]
            suite = ET.parse(tmp_path / "reports" / f"{name}.xml").getroot()
            assert suite.get("failures") == "0" and suite.get("tests") == "6"
        # at 5 % loss the IVR still understood the keys and said the words; the MOS fell
        clean, lossy = (json.loads((tmp_path / "reports" / f"{name}.json").read_text())["grades"]
                        for name in ("ivr", "ivr-lossy"))  # fmt: skip
        assert lossy["impaired_packets"]["received"]["dropped"] > 0
        assert lossy["received"]["lost"] > 0 and lossy["sent"]["lost"] > 0, lossy
        assert lossy["mos"] < 4.0 < clean["mos"], (clean, lossy)
        sip = json.loads((tmp_path / "reports" / "ivr-sip.json").read_text())
        assert sip["peer"] == "sip:desk@127.0.0.1:5062" and sip["end_reason"] == "remote_hangup"
        graded = sip["grades"]  # ~16 s of call: RTCP reports every 5 s
        assert graded["rtcp_reports"] >= 2 and graded["received"]["codec"] == "opus", graded
        assert graded["received"]["lost"] == 0 and graded["mos"] > 4.0, graded
        wrong = subprocess.run(["callbot", "call", "sip:desk@127.0.0.1:5062", "--step",
                                "expect tone 1000 within 2s"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert wrong.returncode == 1, wrong.stderr
        assert wrong.stderr.splitlines()[-1].startswith(
            "step 1 (--step 1) `expect tone 1000 within 2s` failed: expected a 1000 Hz tone "
            "within 2 s; heard: no 1000 Hz tone"
        ), wrong.stderr
        for command in shell_commands():  # the relay and the IVR are still up
            done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, (command, done.stderr)
    finally:
        os.killpg(shell.pid, signal.SIGTERM)  # the relay and bot this test started
        shell.wait(15)
    assert (tmp_path / "call.wav").exists()


def test_the_pytest_example_passes(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (example,) = blocks("python")
    test = tmp_path / "test_example.py"
    test.write_text("import pytest\n\n@pytest.mark.asyncio\n" + example)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(test)], cwd=ROOT, env=cli_env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
