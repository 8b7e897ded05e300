"""Human-facing output of the CLI: styled on a terminal (click), plain text when piped.

Every line goes through `printable`: messages quote remote strings (reasons, ids), which must
not break the line or reach the terminal as escape sequences."""

from __future__ import annotations

import sys

import click

from .safe import printable

#: Erases the current terminal line (carriage return + ECMA-48 "erase in line").
_CLEAR_LINE = "\r\x1b[K"


def _is_terminal() -> bool:
    return sys.stderr.isatty()


def _styled(message: str, style: str) -> str:
    """`message` in `style`: space-separated words, "bold" or a colour name ("red", "green"...)."""
    words = style.split()
    colour = next((word for word in words if word != "bold"), None)
    return click.style(message, fg=colour, bold="bold" in words)


def say(message: str, style: str = "") -> None:
    """A progress line on stderr (stdout stays clean for --json and tokens)."""
    message = printable(message, limit=None)
    styled = bool(style) and _is_terminal()
    click.echo(_styled(message, style) if styled else message, err=True, color=styled)


def status(message: str) -> _TerminalStatus | _NullStatus:
    """A transient status line on a terminal (rewritten by `update`); plain lines otherwise."""
    if _is_terminal():
        return _TerminalStatus(message)
    say(message)
    return _NullStatus()


class _TerminalStatus:
    """One terminal line rewritten in place, erased when the `with` block ends."""

    def __init__(self, message: str) -> None:
        self.update(message)

    def __enter__(self) -> _TerminalStatus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        click.echo(_CLEAR_LINE, err=True, nl=False, color=True)

    def update(self, message: str) -> None:
        line = _CLEAR_LINE + printable(message, limit=None)
        click.echo(line, err=True, nl=False, color=True)


class _NullStatus:
    def __enter__(self) -> _NullStatus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, message: str) -> None:
        say(message)
