"""The ICE servers a relay hands out: STUN servers as configured, and TURN servers with
time-limited credentials in the TURN REST API format (coturn's `use-auth-secret`).

The relay and the TURN server share one secret and never talk to each other: for each user the
relay mints

    username   = "<expiry unix time>:<user>"
    credential = base64(HMAC-SHA1(secret, username))

and the TURN server recomputes the HMAC and checks that the expiry has not passed. A leaked
credential is therefore only good until its expiry, and no per-user TURN accounts exist. The
expiry is only checked when an allocation is made: calls in progress outlive their credentials
(docs/howto/turn.md), but new calls need fresh ones, which clients fetch before the old ones
expire (`credentials_expiry`, docs/protocol.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Lifetime of minted credentials (s): long enough for a client to use its config, short enough
#: that a leaked credential soon becomes useless.
DEFAULT_TTL = 3600.0

# The URI forms of RFC 7064/7065 that aiortc understands: a host name or IPv4 address (no IPv6
# literal), an optional port and, for TURN, an optional transport. It uses the first TURN URL.
_TURN_URL = re.compile(r"turns?:[^:?\s/\[\]]+(:\d{1,5})?(\?transport=(udp|tcp))?")
_STUN_URL = re.compile(r"stuns?:[^:?\s/\[\]]+(:\d{1,5})?")
_REST_USERNAME = re.compile(r"(\d+):.+", re.DOTALL)


def rest_credentials(secret: str, user: str, expires_at: int) -> tuple[str, str]:
    """(username, credential) for `user`, valid until `expires_at` (unix time) on a TURN
    server configured with `static-auth-secret=secret`."""
    username = f"{expires_at}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def credentials_expiry(servers: Iterable[dict[str, Any]]) -> float | None:
    """When the first TURN REST credentials among `servers` (RTCIceServer-shaped dicts)
    expire, read from their `<expiry>:<user>` usernames; None if none of them expires."""
    expiries = [
        float(match.group(1))
        for server in servers
        if isinstance(server.get("username"), str)
        and (match := _REST_USERNAME.fullmatch(server["username"]))
    ]
    return min(expiries, default=None)


def split_urls(values: Iterable[str]) -> list[str]:
    """Each value may hold several URLs separated by commas or spaces (as environment
    variables do): ['turn:a:3478, turn:b:3478'] -> ['turn:a:3478', 'turn:b:3478']."""
    return [url for value in values for url in re.split(r"[\s,]+", value) if url]


def stun_servers(urls: Iterable[str]) -> list[dict[str, Any]]:
    """The RTCIceServer-shaped entry for STUN `urls` ([] for none); ValueError names a
    malformed URL."""
    urls = list(urls)
    for url in urls:
        if not _STUN_URL.fullmatch(url):
            raise ValueError(f"{url!r} is not a STUN URL like stun:stun.example.org:3478")
    return [{"urls": urls}] if urls else []


@dataclass(frozen=True)
class TurnRestAuth:
    """TURN servers that share `secret` with this relay; mints per-user credentials for them.

    `urls` are tried in order by clients that support several (aiortc uses the first).
    """

    urls: tuple[str, ...]
    secret: str
    ttl: float = DEFAULT_TTL

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("give at least one TURN URL")
        for url in self.urls:
            if not _TURN_URL.fullmatch(url):
                raise ValueError(
                    f"{url!r} is not a TURN URL like turn:turn.example.org:3478 "
                    "(or turns:..., ...?transport=tcp)"
                )
        if not self.secret:
            raise ValueError("the TURN secret is empty")
        if not (math.isfinite(self.ttl) and self.ttl >= 1):
            raise ValueError(f"the TURN credential ttl must be at least 1 s, not {self.ttl:g}")

    def ice_server(self, user: str, now: float) -> dict[str, Any]:
        """An RTCIceServer-shaped dict with credentials for `user`, valid for `ttl` from `now`."""
        username, credential = rest_credentials(self.secret, user, math.ceil(now + self.ttl))
        return {"urls": list(self.urls), "username": username, "credential": credential}


@dataclass(frozen=True)
class RelayIceServers:
    """What a relay puts in `welcome.ice_servers` and the ice-config answer: the `fixed`
    entries (e.g. STUN) as they are, then the TURN servers with credentials minted per user."""

    fixed: tuple[dict[str, Any], ...] = ()
    turn: TurnRestAuth | None = None

    def describe(self) -> str:
        """One line for the relay's startup message."""
        parts = [url for server in self.fixed for url in server["urls"]]
        if self.turn is not None:
            parts += [f"{url} (credentials valid {self.turn.ttl:g} s)" for url in self.turn.urls]
        return ", ".join(parts)
