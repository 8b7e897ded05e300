"""`callbot run`'s options that give a bot a SIP address (and a registration), and the
`SipSettings` they describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import SipError
from ..sip.endpoint import SipSettings
from .options import stack_options


def sip_options(func: Any) -> Any:
    """Add --sip, --sip-registrar, --sip-password-file, --sip-register-every and
    --sip-early-media to a command."""
    options = [
        click.option("--sip", "sip_address", metavar="URI",
                     help="Also take SIP calls at this address (sip:ivr@127.0.0.1:5080)."),
        click.option("--sip-registrar", metavar="URI",
                     help="Register the --sip user with this registrar (sip:pbx:5060)."),
        click.option("--sip-password-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File whose first line is the SIP digest password."),
        click.option("--sip-register-every", type=click.IntRange(10), default=300,
                     show_default=True, metavar="S", help="Seconds between registrations."),
        click.option("--sip-early-media", is_flag=True,
                     help="Answer INVITEs with 183 Session Progress at once "
                     "(for incoming.early_media())."),
    ]  # fmt: skip
    return stack_options(options, func)


def sip_settings(
    sip_address: str | None,
    sip_registrar: str | None,
    sip_password_file: Path | None,
    sip_register_every: int,
    sip_early_media: bool,
) -> SipSettings | None:
    """The settings the options describe (None without --sip); a `click.UsageError` for
    options that need --sip or a registrar, a `click.ClickException` for a bad value."""
    if sip_address is None:
        if sip_registrar or sip_password_file or sip_early_media:
            raise click.UsageError("--sip-registrar, --sip-password-file and --sip-early-media "
                                   "need --sip")  # fmt: skip
        return None
    if sip_password_file is not None and sip_registrar is None:
        raise click.UsageError("--sip-password-file needs --sip-registrar")
    try:
        password = SipSettings.read_password(sip_password_file) if sip_password_file else ""
        return SipSettings(
            sip_address,
            registrar=sip_registrar,
            password=password,
            register_every=sip_register_every,
            early_media=sip_early_media,
        )
    except SipError as exc:
        raise click.ClickException(str(exc)) from None
