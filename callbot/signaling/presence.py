"""Presence, sans I/O: what each user shows (available, away, dnd, on_call, offline) and who
is told when that changes.

A user's shown status is derived, never stored stale: `offline` when none of their connections
is open, `on_call` while one of them is in an answered call, otherwise what they last set
(`available` by default), with their optional text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

STATUSES = frozenset({"available", "away", "dnd"})
MAX_TEXT = 256
MAX_WATCHED = 500  # users one connection may follow


class PresenceBoard:
    """Set statuses, subscriptions, and the `presence_update`s owed to subscribers."""

    def __init__(self, online: Callable[[str], bool], on_call: Callable[[str], bool]) -> None:
        self._online = online
        self._on_call = on_call
        self._chosen: dict[str, tuple[str, str | None]] = {}
        self._watchers: dict[str, set[str]] = {}  # user -> connections following them
        self._watching: dict[str, set[str]] = {}  # connection -> users it follows
        self._shown: dict[str, dict[str, Any]] = {}  # last state published per followed user

    def shown(self, user: str) -> dict[str, Any]:
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

    def subscribe(self, conn: str, users: Iterable[str]) -> list[dict[str, Any]]:
        """Follow `users` from `conn`; returns their current states (for `presence_list`)."""
        watching = self._watching.setdefault(conn, set())
        states = []
        for user in users:
            if user not in watching and len(watching) >= MAX_WATCHED:
                break
            watching.add(user)
            self._watchers.setdefault(user, set()).add(conn)
            state = self.shown(user)
            self._shown[user] = state
            states.append(state)
        return states

    def unsubscribe(self, conn: str, users: Iterable[str]) -> None:
        for user in users:
            self._watching.get(conn, set()).discard(user)
            watchers = self._watchers.get(user)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[user]
                    self._shown.pop(user, None)

    def forget_connection(self, conn: str) -> None:
        self.unsubscribe(conn, list(self._watching.pop(conn, ())))

    def updates(self, users: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        """(connection, presence_update) for each followed user whose state changed."""
        out: list[tuple[str, dict[str, Any]]] = []
        for user in set(users):
            watchers = self._watchers.get(user)
            if not watchers:
                continue
            state = self.shown(user)
            if state == self._shown.get(user):
                continue
            self._shown[user] = state
            out += [(conn, {"type": "presence_update", **state}) for conn in sorted(watchers)]
        return out
