"""Presence, sans I/O: what each user shows (available, away, dnd, on_call, offline) and who
is told when that changes.

A user's shown status is derived, never stored stale: `offline` when none of their connections
is open, `on_call` while one of them is in an answered call, otherwise what they last set
(`available` by default), with their optional text.

Presence is opt-in (DESIGN §10): a watcher sees the real state of bots, of itself, and of users
whose `presence_set.visible_to` names it (or is "everyone"); of anyone else it sees `unknown`,
the same whether that user exists, is online or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # messages.py imports the limits below
    from .messages import PresenceState, PresenceUpdate

STATUSES = frozenset({"available", "away", "dnd"})
MAX_TEXT = 256
MAX_WATCHED = 500  # users one connection may follow
EVERYONE = "everyone"  # `visible_to` value: every user may see this user's presence
UNKNOWN = "unknown"  # the status shown to a watcher not allowed to see the real one


class PresenceBoard:
    """Set statuses, subscriptions, and the `presence_update`s owed to subscribers."""

    def __init__(
        self,
        online: Callable[[str], bool],
        on_call: Callable[[str], bool],
        is_bot: Callable[[str], bool],
        user_of: Callable[[str], str | None],
    ) -> None:
        self._online = online
        self._on_call = on_call
        self._is_bot = is_bot
        self._user_of = user_of  # connection -> its user
        self._chosen: dict[str, tuple[str, str | None]] = {}
        self._audience: dict[str, frozenset[str] | None] = {}  # user -> who may see (None: all)
        self._watchers: dict[str, set[str]] = {}  # user -> connections following them
        self._watching: dict[str, set[str]] = {}  # connection -> users it follows
        self._sent: dict[str, dict[str, PresenceState]] = {}  # conn -> user -> last state sent

    def shown(self, user: str) -> PresenceState:
        """What `user` shows now: {user, status, text}."""
        if not self._online(user):
            status, text = "offline", None
        elif self._on_call(user):
            status, text = "on_call", self._chosen.get(user, ("available", None))[1]
        else:
            status, text = self._chosen.get(user, ("available", None))
        return {"user": user, "status": status, "text": text}

    def choose(self, user: str, status: str, text: str | None) -> None:
        self._chosen[user] = (status, text)

    def share(self, user: str, visible_to: str | list[str]) -> None:
        """Who may see `user`'s presence: "everyone" or these users (`[]`: nobody)."""
        self._audience[user] = None if visible_to == EVERYONE else frozenset(visible_to)

    def setting(self, user: str) -> dict[str, Any] | None:
        """What `user` chose and who may see it (for the other relays of a cluster, which
        pass it back to `choose` and `share`); None if they never set anything."""
        if user not in self._chosen and user not in self._audience:
            return None
        status, text = self._chosen.get(user, ("available", None))
        out: dict[str, Any] = {"status": status, "text": text}
        if user in self._audience:
            audience = self._audience[user]
            out["visible_to"] = EVERYONE if audience is None else sorted(audience)
        return out

    def may_see(self, conn: str, user: str) -> bool:
        """The policy: bots and oneself are visible; users only to whom they allow."""
        watcher = self._user_of(conn)
        if watcher == user or self._is_bot(user):
            return True
        if user not in self._audience:
            return False
        audience = self._audience[user]
        return audience is None or watcher in audience

    def shown_to(self, conn: str, user: str, real: PresenceState | None = None) -> PresenceState:
        """What the watcher on `conn` may see of `user`: the real state, or `unknown`."""
        if self.may_see(conn, user):
            return real if real is not None else self.shown(user)
        return {"user": user, "status": UNKNOWN, "text": None}

    def subscribe(self, conn: str, users: Iterable[str]) -> list[PresenceState]:
        """Follow `users` from `conn`; returns their current states (for `presence_list`)."""
        watching = self._watching.setdefault(conn, set())
        states: list[PresenceState] = []
        for user in users:
            if user not in watching and len(watching) >= MAX_WATCHED:
                break
            watching.add(user)
            self._watchers.setdefault(user, set()).add(conn)
            state = self.shown_to(conn, user)
            self._sent.setdefault(conn, {})[user] = state
            states.append(state)
        return states

    def unsubscribe(self, conn: str, users: Iterable[str]) -> None:
        for user in users:
            self._watching.get(conn, set()).discard(user)
            self._sent.get(conn, {}).pop(user, None)
            watchers = self._watchers.get(user)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[user]

    def forget_connection(self, conn: str) -> None:
        self.unsubscribe(conn, list(self._watching.pop(conn, ())))
        self._sent.pop(conn, None)

    def updates(self, users: Iterable[str]) -> list[tuple[str, PresenceUpdate]]:
        """(connection, presence_update) for each followed user whose state changed."""
        out: list[tuple[str, PresenceUpdate]] = []
        for user in set(users):
            watchers = self._watchers.get(user)
            if not watchers:
                continue
            real = self.shown(user)
            for conn in sorted(watchers):
                state = self.shown_to(conn, user, real)
                sent = self._sent.setdefault(conn, {})
                if state != sent.get(user):
                    sent[user] = state
                    out.append((conn, {"type": "presence_update", **state}))
        return out
