"""Human-facing output of the CLI: styled on a terminal (rich), plain text when piped.

Every line goes through `printable`: messages quote remote strings (reasons, ids), which must
not break the line or reach the terminal as escape sequences."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from .safe import printable

_err = Console(stderr=True, soft_wrap=True, highlight=False)


def say(message: str, style: str = "") -> None:
    """A progress line on stderr (stdout stays clean for --json and tokens)."""
    message = printable(message, limit=None)
    if _err.is_terminal and style:
        _err.print(f"[{style}]{escape(message)}[/]")
    else:
        print(message, file=sys.stderr, flush=True)


def is_terminal() -> bool:
    return _err.is_terminal


def status(message: str):  # type: ignore[no-untyped-def]
    """A live status line (spinner) on a terminal; a plain line otherwise."""
    if _err.is_terminal:
        return _err.status(escape(printable(message, limit=None)))
    say(message)
    return _NullStatus()


class _NullStatus:
    def __enter__(self) -> _NullStatus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, message: str) -> None:
        say(message)
