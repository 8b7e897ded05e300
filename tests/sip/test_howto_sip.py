"""docs/howto/sip.md does what it says: its bot files and commands run as written (only the
ports are replaced by free ones), against independent peers: a baresip softphone calls the
bot and is called by it, Kamailio registers it. What each side hears is checked by frequency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from baresip_peer import BaresipPeer
from kamailio_server import Kamailio
from sip_media import HOST, free_port, write_pcm_wav

from callbot.media import analysis

from helpers import eventually

pytest.importorskip("baresip", reason="pip install 'callbot[sip]'")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "howto" / "sip.md"
Peer = Callable[..., Awaitable[BaresipPeer]]
PROMPT_HZ, CALLER_HZ = 1000.0, 440.0


def section(title: str, language: str) -> str:
    """The first `language` block under the `## title` heading."""
    text = DOC.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)[0]


def assert_tone(recording: Path, frequency: float) -> None:
    assert abs(analysis.dominant_frequency(recording) - frequency) < 15, recording
    assert analysis.tone_level_db(recording, frequency) > -30, recording


@pytest.fixture
def sip_users() -> dict[str, str]:
    return {"ivr": "ivr-secret"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the doc's files go: the bot's prompt (a 2 s 1000 Hz tone) is there."""
    write_pcm_wav(tmp_path / "prompt.wav", PROMPT_HZ, 2.0, 48000)
    return tmp_path


def command_of(title: str) -> list[str]:
    """The `callbot ...` line of the section `title`, as the argument list we run."""
    [line] = [x for x in section(title, "sh").splitlines() if x.strip()]
    return [sys.executable, "-m", "callbot", *shlex.split(line)[1:]]


def with_ports(args: list[str], ports: dict[str, str]) -> list[str]:
    """`args` with each documented host:port replaced by the test's (free) one."""
    for documented, actual in ports.items():
        args = [arg.replace(documented, actual) for arg in args]
    return args


@contextlib.asynccontextmanager
async def callbot_run(
    workdir: Path, command: list[str], env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A documented `callbot run` line (ivr.py in `workdir`), until the bot takes SIP calls;
    the process is ended by its PID afterwards."""
    log = workdir / "run.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def started(text: str) -> bool:
            return "takes SIP calls" in text or process.returncode is not None

        await eventually(log.read_text, "the bot ready", until=started, timeout=30)
        assert process.returncode is None, log.read_text()
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def call_and_hang_up(caller: BaresipPeer, uri: str) -> None:
    """Dial `uri`, stay for the whole 2 s prompt, hang up."""
    await caller.dial(uri)
    await caller.wait_established()
    await asyncio.sleep(2.5)
    await caller.hangup()
    await caller.wait_closed()


async def test_the_ivr_takes_a_call_at_its_sip_address(
    workdir: Path, cli_env: dict[str, str], baresip_peer: Peer, pcm_tone: Callable[..., Path]
) -> None:
    title = "Take calls at a SIP address"
    (workdir / "ivr.py").write_text(section(title, "python"))
    address = f"{HOST}:{free_port()}"
    command = with_ports(command_of(title), {"127.0.0.1:5080": address})
    async with callbot_run(workdir, command, cli_env):
        caller = await baresip_peer(user="caller", play=pcm_tone(CALLER_HZ, 4.0))
        await call_and_hang_up(caller, f"sip:ivr@{address}")
    assert_tone(caller.recordings()[0], PROMPT_HZ)
    assert_tone(workdir / "caller.wav", CALLER_HZ)


@pytest.mark.parametrize("form", ["command line", "python"])
async def test_the_registered_ivr_is_reached_through_the_pbx(
    workdir: Path, cli_env: dict[str, str], baresip_peer: Peer, kamailio: Kamailio,
    sip_users: dict[str, str], form: str,
) -> None:  # fmt: skip
    (workdir / "ivr.password").write_text(sip_users["ivr"] + "\n")
    ports = {"127.0.0.1:5080": f"{HOST}:{free_port()}", "127.0.0.1:5060": kamailio.address}
    if form == "python":  # the section's bot file, run as the first section runs a bot file
        bot_file = section("Register with a PBX", "python")
        text = DOC.read_text().split("## Register with a PBX\n", 1)[1]
        line = re.search(r"Run it with `(callbot run ivr.py --workers 1)`", text)
        assert line, "the Python form's command"
        command = [sys.executable, "-m", "callbot", *shlex.split(line[1])[1:]]
    else:
        bot_file = section("Take calls at a SIP address", "python")
        command = command_of("Register with a PBX")
    for documented, actual in ports.items():
        bot_file = bot_file.replace(documented, actual)
    (workdir / "ivr.py").write_text(bot_file)
    async with callbot_run(workdir, with_ports(command, ports), cli_env):
        caller = await baresip_peer(user="caller")
        await call_and_hang_up(caller, f"sip:ivr@{kamailio.address}")  # the extension
    assert_tone(caller.recordings()[0], PROMPT_HZ)


async def test_callbot_call_tests_a_phone_from_the_shell(
    workdir: Path, cli_env: dict[str, str], baresip_peer: Peer, pcm_tone: Callable[..., Path]
) -> None:
    desk = await baresip_peer(user="desk", play=pcm_tone(CALLER_HZ, 6.0))
    ports = {"127.0.0.1:5062": f"{HOST}:{desk.sip_port}"}
    command = with_ports(command_of("Call a SIP phone"), ports)
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, env=cli_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()[-2000:] + err.decode()[-2000:]
    report = json.loads(out)
    assert report["peer"].startswith("sip:desk@"), report
    await desk.wait_closed()
    assert_tone(desk.recordings()[0], PROMPT_HZ)


async def test_the_dialer_calls_a_phone_plays_sends_digits_and_hangs_up(
    workdir: Path, cli_env: dict[str, str], baresip_peer: Peer
) -> None:
    desk = await baresip_peer(user="desk")
    script = section("Call a SIP phone", "python").replace(
        "127.0.0.1:5062", f"{HOST}:{desk.sip_port}"
    )
    (workdir / "dial.py").write_text(script)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "dial.py", cwd=workdir, env=cli_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-3000:]
    assert out.decode().splitlines()[-1] == "hangup"
    await desk.wait_closed()
    assert_tone(desk.recordings()[0], PROMPT_HZ)
    assert desk.received_digits() == "1#"


def test_the_test_job_installs_what_ci_installs_and_selects_the_sip_tests() -> None:
    apt, pip, pytest_line = (x for x in section("What a test job runs", "sh").splitlines() if x)
    ci = (ROOT / ".ci" / "run").read_text()
    documented = set(shlex.split(apt)[4:])
    installed = set(
        re.findall(r"\[ -x /usr/s?bin/(?:baresip|sipp|kamailio) \] \|\| missing\+=\((\S+)\)", ci)
    )
    assert documented == installed == {"baresip-core", "sip-tester", "kamailio"}
    assert (
        "pip install -e '.[test]'" in pip
        and '"callbot[sip]"' in (ROOT / "pyproject.toml").read_text()
    )
    # the documented pytest command, collecting only (running would repeat this directory)
    inner = shlex.split(pytest_line)[-1].split("&& ", 1)[1]
    command = [
        sys.executable,
        *shlex.split(inner)[1:],
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    selected = [line for line in result.stdout.splitlines() if "::" in line]
    assert selected and all(line.startswith(("tests/sip/", "tests/test_sip")) for line in selected)
    assert any(line.startswith("tests/sip/test_sip_peers.py") for line in selected)
