"""The CLI prints softphone links that sign the page in: `callbot token create`, `callbot run`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from playwright.async_api import BrowserContext, expect
from softphone_page import Softphone

CALLBOT = [sys.executable, "-m", "callbot"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALLBOT_SERVER", "CALLBOT_TOKEN")}
    return {**env, "CALLBOT_STATE_DIR": str(tmp_path / "state")}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_token_create_prints_the_token_and_a_link(tmp_path: Path) -> None:
    created = subprocess.run(
        [*CALLBOT, "token", "create", "alice", "--relay-url", "http://127.0.0.1:9999/"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=60,
    )  # fmt: skip
    token = created.stdout.strip()
    assert created.returncode == 0 and token.count(".") == 2 and "\n" not in token
    assert f"softphone for alice: http://127.0.0.1:9999/#token={token}\n" in created.stderr


async def test_callbot_run_prints_a_link_that_signs_the_page_in(
    tmp_path: Path, browser: BrowserContext
) -> None:
    port = _free_port()
    log = tmp_path / "run.log"
    command = [*CALLBOT, "run", "--as", "echo", "--plugin", "echo", "--port", str(port)]
    with log.open("w") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                env=_env(tmp_path))  # fmt: skip
    try:
        link = await asyncio.to_thread(
            _wait_for, log, rf"softphone for you: (http://127\.0\.0\.1:{port}/#token=\S+)\n"
        )
        phone = Softphone(await browser.new_page())
        page = phone.page
        await page.goto(link)
        await expect(page.locator("#presence")).to_have_text("Signed in as you")
        assert "#" not in page.url  # the token left the address bar
        await phone.dial("echo")
        await phone.wait_status("Connected")
        await page.get_by_role("button", name="Hang up").click()
        ended = r"echo\[\d+\]: call \w+ with you ended: remote_hangup"
        await asyncio.to_thread(_wait_for, log, ended)
        assert phone.errors == []
    finally:
        proc.send_signal(signal.SIGTERM)  # the process this test started, by PID
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(log: Path, pattern: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text())
        if match:
            return match.group(match.lastindex or 0)
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in:\n{log.read_text()}")
