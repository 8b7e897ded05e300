"""`callbot keygen`: an Ed25519 identity key to sign offers and answers."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say


@click.command()
@click.argument(
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("~/.config/callbot/identity.key").expanduser(),
)
@click.option(
    "--user",
    default="ME",
    show_default=True,
    help="User id to put in the printed known_peers line.",
)
@click.option("--force", is_flag=True, help="Replace an existing key file.")
def keygen(path: Path, user: str, force: bool) -> None:
    """Create an Ed25519 identity key (mode 0600) and print its known_peers line.

    Peers pin that line in their known_peers file; with --identity KEY your offers and answers
    are signed, so a relay that tampers with the media setup is caught.

    \b
    Example:
      callbot keygen ~/.config/callbot/greeter.key --user greeter >> peers/known_peers
      callbot run samples/greeter.py --identity ~/.config/callbot/greeter.key \\
          --known-peers peers/known_peers --require-signatures
    """
    from ..identity import IdentityKey

    if path.exists() and not force:
        raise click.ClickException(f"{path} exists (use --force to replace it)")
    key = IdentityKey.generate()
    key.save(path)
    say(f"identity key written to {path} (mode 0600)")
    click.echo(f"{user} {key.public_key}")
