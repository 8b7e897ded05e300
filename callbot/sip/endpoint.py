"""A bot's SIP side: its address (and registration), INVITEs in, calls out.

`SipSettings` says where the bot listens and whether it registers; `SipEndpoint` holds the bot's
user agent on the process's stack, turns INVITEs into `SipCall`s for the bot's handlers and
dials SIP URIs for `bot.call("sip:...")`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CallConfig
from ..errors import SipError
from ..safe import get_logger, printable
from .call import SipCall
from .stack import SipAgent, SipSession, SipStack, StackConfig

logger = get_logger(__name__)

#: sip:user@host:port (RFC 3261 section 19.1; parameters and headers are ignored here).
_URI = re.compile(r"^sips?:(?:(?P<user>[^@;?]+)@)?(?P<host>[^:;?]+)(?::(?P<port>\d+))?")
DEFAULT_PORT = 5060


def is_sip_uri(peer: str) -> bool:
    """Whether `peer` names a SIP endpoint rather than a relay user."""
    return peer.startswith(("sip:", "sips:"))


def parse_uri(uri: str) -> tuple[str, str, int]:
    """(user, host, port) of a SIP URI; raises `SipError` for anything else."""
    match = _URI.match(uri.strip())
    port = int(match.group("port") or DEFAULT_PORT) if match else 0
    if match is None or not 0 < port < 65536:
        shown = printable(uri, 80)
        raise SipError("bad_uri", f"not a SIP address: {shown!r} (want sip:user@host:port)")
    return match.group("user") or "", match.group("host"), port


@dataclass(frozen=True)
class SipSettings:
    """A bot's SIP address, e.g. `SipSettings("sip:ivr@127.0.0.1:5080")`: it listens on that
    host and port and takes INVITEs sent straight to it. With `registrar` it also registers
    there as `user` (digest auth with `password`), refreshing every `register_every` seconds.
    `early_media` sends 183 Session Progress as soon as an INVITE arrives, which
    `incoming.early_media()` needs."""

    address: str
    registrar: str | None = None
    password: str = ""
    register_every: int = 300
    early_media: bool = False

    def __post_init__(self) -> None:
        user, _, _ = parse_uri(self.address)
        if not user:
            raise SipError("bad_uri", f"the bot's SIP address needs a user: {self.address}")
        if self.registrar is not None:
            parse_uri(self.registrar)
        if self.register_every < 10:
            raise SipError("bad_setting", "register_every must be at least 10 seconds")

    @staticmethod
    def read_password(path: str | Path) -> str:
        """A password file's first line (secrets stay off the command line)."""
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise SipError("bad_password_file", f"cannot read {path}: {exc.strerror}") from None
        return lines[0].strip() if lines else ""


NewCall = Callable[[SipCall], None]


class SipEndpoint:
    """A bot's user agent: INVITEs become `SipCall`s handed to `on_call`; `place` dials."""

    def __init__(
        self,
        settings: SipSettings | None,
        config: Callable[[], CallConfig],
        on_call: NewCall,
        local_user: str,
    ) -> None:
        self.settings = settings
        self._config = config
        self._on_call = on_call
        self._local_user = local_user
        self._stack: SipStack | None = None
        self._agent: SipAgent | None = None
        self._dialer: SipAgent | None = None  # outbound only, when the bot has no address

    async def start(self) -> None:
        """Listen (and register) at the bot's address; raises `SipError` when that fails."""
        settings = self.settings
        if settings is None or self._agent is not None:
            return
        user, host, port = parse_uri(settings.address)
        media_timeout = self._config().media_timeout
        stack = await SipStack.acquire(StackConfig(host, port, round(media_timeout)))
        self._stack = stack
        try:
            domain, interval = f"{host}:{port}", 0
            if settings.registrar is not None:
                _, reg_host, reg_port = parse_uri(settings.registrar)
                domain, interval = f"{reg_host}:{reg_port}", settings.register_every
            agent = await stack.agent(
                user,
                domain,
                password=settings.password,
                reg_interval=interval,
                early_media=settings.early_media,
            )
            agent.on_incoming(self._invited)
            self._agent = agent
            if interval:
                await agent.register()
                logger.info("registered as %s at %s", user, domain)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for agent in (self._agent, self._dialer):
            if agent is not None:
                await agent.close()
        self._agent = self._dialer = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.release()

    async def place(self, uri: str, metadata: dict[str, Any] | None) -> SipCall:
        """A new outbound `SipCall` to `uri` (not started: `await call.start()` sends the
        INVITE)."""
        parse_uri(uri)
        return SipCall(direction="outbound", peer=uri, config=self._config(),
                       metadata=metadata, dial=self._dial, local_user=self._local_user)  # fmt: skip

    async def _dial(self, uri: str) -> SipSession:
        agent = self._agent
        if agent is None:
            if self._dialer is None:
                if self._stack is None:
                    self._stack = await SipStack.acquire(None)
                host, port = self._stack.config.host, self._stack.config.port
                self._dialer = await self._stack.agent(self._local_user or "callbot",
                                                       f"{host}:{port}")  # fmt: skip
            agent = self._dialer
        return await agent.dial(uri)

    def _invited(self, session: SipSession) -> None:
        settings = self.settings
        metadata: dict[str, Any] = {name.lower(): value for name, value in session.headers.items()}
        metadata["sip_call_id"] = session.call_id
        metadata["display_name"] = _display_name(metadata.get("from", ""))
        call = SipCall(direction="inbound", peer=session.peer, config=self._config(),
                       metadata=metadata, session=session, local_user=self._local_user,
                       early_media=bool(settings and settings.early_media))  # fmt: skip
        self._on_call(call)


def _display_name(address: str) -> str:
    """The display name of a From header's value (`"Alice" <sip:alice@host>` -> Alice)."""
    name = address.split("<", 1)[0].strip() if "<" in address else ""
    return name.strip('"').strip()
