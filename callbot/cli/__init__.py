"""The `callbot` command line: one module per command (run, serve, call, token, media, demo,
keygen); `options` holds what they share, `runner` and `workers` what `callbot run` does."""

from __future__ import annotations

import logging

import click

from ..safe import SafeFormatter


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="callbot")
def main(verbose: int) -> None:
    """callbot: headless WebRTC media bots.

    \b
    Examples:
      callbot run samples/greeter.py          # a bot, with an embedded relay
      callbot call greeter --play samples/tone-440.wav --record reply.wav --json
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = logging.StreamHandler()  # one printable line per record: remote strings escaped
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _register() -> None:
    """Attach every command to `main` (imported here: each module needs only click at import)."""
    from .call import call
    from .demo import demo
    from .keygen import keygen
    from .media import media
    from .run import run
    from .serve import serve
    from .token import token

    for command in (run, serve, call, token, media, demo, keygen):
        main.add_command(command)


_register()
