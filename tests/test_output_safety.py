"""Remote strings never forge output: a peer's hang-up reason with a line break and escape
sequences reaches `callbot call` (plain, --json, --junit), logs and the terminal escaped, and the
relay itself forwards only plain reasons."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from callbot import Bot, Incoming
from callbot.console import say
from callbot.safe import SafeFormatter, get_logger, printable
from callbot.signaling import messages
from callbot.signaling.messages import validate
from callbot.signaling.relay import Relay
from callbot.signaling.relay_core import Send

from helpers import eventually

ROOT = Path(__file__).resolve().parents[1]
#: A line break that would start a GitHub workflow command, a terminal escape, and BEL (a
#: character XML 1.0 forbids).
EVIL = "x\n::error file=a::owned\x1b[31m\x07"


def _forged(text: str) -> list[str]:
    """Lines that a CI runner or a terminal would take for something else."""
    return [line for line in text.splitlines() if line.lstrip().startswith("::")] + (
        ["<escape>"] if "\x1b" in text or "\x07" in text else []
    )


def test_printable_escapes_and_cuts() -> None:
    assert printable(EVIL) == "x\\n::error file=a::owned\\x1b[31m\\x07"
    assert printable("a\u202eb\u2028c\x00") == "a\\u202eb\\u2028c\\x00"
    assert printable("plain: ok-1.2") == "plain: ok-1.2"
    assert printable("y" * 300, 10) == "y" * 9 + "…"


def test_say_writes_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    say(f"call c1 with {EVIL} connected", "green")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not _forged(err)


def test_cli_log_lines_are_one_printable_line() -> None:
    """The CLI's log formatter escapes any message (a plugin's too); tracebacks keep lines."""
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("plugin", logging.WARNING, "f", 1, "peer said %s", (EVIL,), None)
    line = formatter.format(record)
    assert line == "WARNING peer said x\\n::error file=a::owned\\x1b[31m\\x07"
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "Traceback" in formatter.format(record).splitlines()[1]


def test_relay_forwards_only_plain_hangup_reasons() -> None:
    bad = validate({"type": "hangup", "call_id": "c1", "reason": EVIL})
    assert bad["reason"] == "hangup"
    assert validate({"type": "hangup", "call_id": "c1", "reason": "x" * 65})["reason"] == "hangup"
    good = validate({"type": "hangup", "call_id": "c1", "reason": "identity_mismatch"})
    assert good["reason"] == "identity_mismatch"


async def _callbot_call(relay: Relay, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "call", "evil", "--server", relay.url,
        "--token", relay.mint("caller"), "--timeout", "20", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
def passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that forwards any hang-up reason (an older or hostile relay)."""
    monkeypatch.setattr(messages, "REASON_PATTERN", re.compile(r"(?s).*"))


async def test_callbot_call_output_has_no_forged_line(
    relay: Relay, passthrough: None, tmp_path: Path
) -> None:
    """A real peer hangs up while ringing with an evil reason: the one-line failure, the plain
    report, the JSON report and the JUnit XML quote it escaped; the XML parses."""
    evil = Bot("evil", server=relay.url, token=relay.mint("evil", role="bot"))
    calls: list[Any] = []
    evil.on("call", calls.append)

    @evil.on_incoming
    async def refuse(incoming: Incoming) -> None:
        await calls[-1].hangup(EVIL)

    async with evil:
        junit = tmp_path / "call.xml"
        code, out, err = await _callbot_call(relay, "--json", "--junit", str(junit))
        plain_code, plain_out, plain_err = await _callbot_call(relay)
    assert code == plain_code == 1
    report = json.loads(out)
    assert report["remote_end_reason"] == "x\\n::error file=a::owned\\x1b[31m\\x07"
    assert "x\\n::error file=a::owned" in err and "x\\n::error file=a::owned" in plain_err
    xml = junit.read_text()
    for text in (out, err, plain_out, plain_err, xml):
        assert not _forged(text), text
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    (failure,) = suite.iter("failure")
    assert "x\\n::error file=a::owned\\x1b[31m\\x07" in failure.get("message", "")


async def test_relay_errors_are_logged_escaped(
    relay: Relay, make_bot, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile relay's error text is logged as one escaped line."""
    bot = make_bot("victim")
    await bot.start()
    (conn,) = relay.core._by_user["victim"]
    with caplog.at_level(logging.WARNING):
        relay._apply([Send(conn, {"type": "error", "code": "x", "message": EVIL})])
        await eventually(lambda: "relay error" in caplog.text, "the relay error's log line")
    assert "relay error: x: x\\n::error file=a::owned" in caplog.text
    assert not _forged(caplog.text)


async def test_library_log_lines_escape_remote_text_under_any_handler(
    relay: Relay, make_bot, caplog: pytest.LogCaptureFixture
) -> None:
    """No CLI formatter here (caplog's plain handler): a relay error naming a live call fails
    it, and the call's `unhandled error event` line quotes the relay's text escaped."""
    caller = make_bot("caller")
    await make_bot("callee").start()
    await caller.start()
    call = await caller.call("callee")
    (conn,) = relay.core._by_user["caller"]
    error = {"type": "error", "code": "call_failed", "call_id": call.id, "message": EVIL}
    with caplog.at_level(logging.WARNING):
        relay._apply([Send(conn, error)])
        await eventually(lambda: "unhandled error event" in caplog.text, "the error's log line")
    assert "call_failed: x\\n::error file=a::owned\\x1b[31m\\x07" in caplog.text
    assert not _forged(caplog.text)


def test_a_bad_log_format_stays_the_handlers_problem() -> None:
    """The escaping filter formats the message early; a format error must not reach the code
    that logged (the handler reports it, as it would without the filter)."""
    (escape,) = get_logger("callbot.test_output_safety").filters
    bad = logging.LogRecord("callbot.x", logging.WARNING, "f", 1, "%d calls", ("many",), None)
    assert escape.filter(bad) and (bad.msg, bad.args) == ("%d calls", ("many",))
    good = logging.LogRecord("callbot.x", logging.WARNING, "f", 1, "peer said %s", (EVIL,), None)
    assert escape.filter(good)
    assert good.getMessage() == "peer said " + printable(EVIL, limit=None)
