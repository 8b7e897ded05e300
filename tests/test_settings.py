"""Settings are resolved once, at the edge (CLI, Bot constructor, pytest plugin), and passed
down: nothing below reads or writes the environment, and two sources that disagree are an
error, never a silent choice."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from callbot import Bot, CallConfig
from callbot.cli import main
from callbot.identity import IdentityKey
from callbot.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
#: The edges: the only modules that may read os.environ.
EDGES = ("callbot/cli/", "callbot/testing/", "callbot/settings.py", "callbot/bot.py")


def _environ_uses(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every os.environ / os.getenv / os.putenv use in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "putenv", "unsetenv")
        ):
            found.append((node.lineno, node.attr))
    return found


def test_only_the_edges_read_the_environment_and_nothing_writes_it() -> None:
    readers = {
        str(path.relative_to(ROOT)): uses
        for path in sorted((ROOT / "callbot").rglob("*.py"))
        if (uses := _environ_uses(path))
    }
    assert readers, "the check found no use at all: it is broken"
    below = {path: uses for path, uses in readers.items() if not path.startswith(EDGES)}
    assert not below, f"modules below the edges read the environment: {below}"
    for path in readers:
        tree = ast.parse((ROOT / path).read_text())
        writes = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign | ast.AugAssign)
            and any("os.environ" in ast.unparse(t) for t in getattr(node, "targets", [node]))
        ]
        assert not writes, f"{path} writes os.environ at lines {writes}"


def test_environment_values_are_parsed_in_one_place() -> None:
    settings = Settings.from_env(
        {"CALLBOT_REQUIRE_SIGNATURES": "Yes", "CALLBOT_ALWAYS_RELAY": "0",
         "CALLBOT_FASTPATH": "off", "CALLBOT_ICE_ADDRESSES": "127.0.0.1, ::1",
         "CALLBOT_STATE_DIR": "/srv/callbot", "CALLBOT_SERVER": " "}
    )  # fmt: skip
    assert settings.require_signatures and not settings.always_relay and not settings.fastpath
    assert settings.ice_addresses == ("127.0.0.1", "::1")
    assert settings.state_dir == Path("/srv/callbot") and settings.server is None
    with pytest.raises(SettingsError, match="CALLBOT_ALWAYS_RELAY='maybe'"):
        Settings.from_env({"CALLBOT_ALWAYS_RELAY": "maybe"})  # was: silently off


def test_bot_arguments_beside_a_config_are_an_error_not_ignored() -> None:
    """Bot(config=..., video_codec=...) used to drop video_codec without a word."""
    config = CallConfig()
    for extra in ({"video_codec": "h264"}, {"video_size": (320, 240)},
                  {"ice_addresses": ["127.0.0.1"]}, {"always_relay": True}):  # fmt: skip
        with pytest.raises(SettingsError, match=f"give {next(iter(extra))} inside config="):
            Bot("x", server="ws://127.0.0.1:1/ws", token="t", config=config, **extra)
    bot = Bot("x", server="ws://127.0.0.1:1/ws", token="t", video_codec="h264")
    assert bot.config.video_codec == "h264"


def test_bot_takes_the_environment_once_and_its_arguments_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBOT_ICE_ADDRESSES", "127.0.0.1")
    monkeypatch.setenv("CALLBOT_FASTPATH", "0")
    monkeypatch.setenv("CALLBOT_SERVER", "ws://127.0.0.1:9/ws")
    bot = Bot("x", ice_addresses=["::1"])
    assert bot.config.ice.addresses == ("::1",) and not bot.config.fastpath
    assert bot.server == "ws://127.0.0.1:9/ws"
    monkeypatch.setenv("CALLBOT_ICE_ADDRESSES", "10.0.0.1")  # read at construction, not later
    assert bot.config.ice.addresses == ("::1",)
    given = Bot("y", settings=Settings(server="ws://127.0.0.1:7/ws"))  # no environment at all
    assert given.server == "ws://127.0.0.1:7/ws" and given.config.fastpath


def test_command_line_settings_that_contradict_the_bots_code_are_an_error(
    tmp_path: Path,
) -> None:
    mine, theirs = tmp_path / "mine.key", tmp_path / "theirs.key"
    IdentityKey.generate().save(mine)
    IdentityKey.generate().save(theirs)
    bot = Bot("x", server="ws://127.0.0.1:1/ws", token="t", identity=mine)
    bot.configure(Settings(identity=str(mine), always_relay=True))  # agrees, and adds
    assert bot.config.ice.relay_only and bot.identity is not None
    with pytest.raises(SettingsError, match=r"identity: .*mine\.key.* vs .*theirs\.key"):
        bot.configure(Settings(identity=str(theirs)))


def test_callbot_run_refuses_a_flag_the_bot_file_contradicts(tmp_path: Path) -> None:
    bot_file = tmp_path / "pinned.py"
    bot_file.write_text("from callbot import Bot\nbot = Bot('pinned', ice_addresses=['::1'])\n")
    before = dict(os.environ)
    result = CliRunner().invoke(
        main,
        ["run", str(bot_file), "--port", "0", "--workers", "1", "--ice-address", "127.0.0.1",
         "--state-dir", str(tmp_path / "state")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "its code and the command line disagree on ice_addresses" in result.output
    assert dict(os.environ) == before  # the CLI no longer exports its settings
