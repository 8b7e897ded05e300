"""The relay's state directory: an SQLite file holding the token secret and revocations.

Shared by the relay and the `callbot token` commands (several processes), which is why the
relay polls `changed()` (SQLite's `PRAGMA data_version`, a cheap counter bumped by other
connections' commits) to cut revoked sessions at once.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from pathlib import Path

from ..identity import TokenClaims, mint_token, verify_token

#: Where state lives when nobody chose (the edges resolve $CALLBOT_STATE_DIR and
#: $XDG_STATE_HOME before this: callbot.settings.default_state_dir).
FALLBACK_STATE_DIR = Path.home() / ".local" / "state" / "callbot"


class RelayState:
    """Token secret (created on first use) and per-user token generations."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else FALLBACK_STATE_DIR
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / "state.db"
        fresh = not path.exists()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if fresh:
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS revocations"
            " (user TEXT PRIMARY KEY, generation INTEGER NOT NULL, revoked_at REAL NOT NULL)"
        )
        self.secret = self._secret()
        self._version = self._data_version()
        self._own_change = False

    def close(self) -> None:
        self._db.close()

    def _secret(self) -> bytes:
        self._db.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('secret', ?)",
            (secrets.token_bytes(32),),
        )
        row = self._db.execute("SELECT value FROM settings WHERE key = 'secret'").fetchone()
        return bytes(row[0])

    def generation(self, user: str) -> int:
        row = self._db.execute(
            "SELECT generation FROM revocations WHERE user = ?", (user,)
        ).fetchone()
        return int(row[0]) if row else 0

    def revoke(self, user: str) -> int:
        """Invalidate every token of `user` issued so far; returns the new generation."""
        self._db.execute(
            "INSERT INTO revocations (user, generation, revoked_at) VALUES (?, 1, ?)"
            " ON CONFLICT(user) DO UPDATE SET generation = generation + 1, revoked_at = ?",
            (user, time.time(), time.time()),
        )
        self._own_change = True  # data_version only moves for other connections' commits
        return self.generation(user)

    def raise_generation(self, user: str, generation: int) -> bool:
        """Adopt a revocation made elsewhere (another relay of a cluster): the generation of
        `user` becomes at least `generation`. Whether it went up."""
        if generation <= self.generation(user):
            return False
        self._db.execute(
            "INSERT INTO revocations (user, generation, revoked_at) VALUES (?, ?, ?)"
            " ON CONFLICT(user) DO UPDATE SET generation = MAX(generation, excluded.generation),"
            " revoked_at = excluded.revoked_at",
            (user, generation, time.time()),
        )
        self._own_change = True
        return True

    def generations(self) -> dict[str, int]:
        """Every revoked user and their current generation."""
        rows = self._db.execute("SELECT user, generation FROM revocations").fetchall()
        return {str(user): int(generation) for user, generation in rows}

    def mint(self, user: str, ttl: float, role: str = "user") -> str:
        """A token for `user`; `role="bot"` for a bot pool member (`--role bot`)."""
        return mint_token(self.secret, user, ttl, self.generation(user), role=role)

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        return verify_token(self.secret, token, self.generation, now)

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """True when a revocation was committed (by any process) since the last call."""
        version = self._data_version()
        changed = version != self._version or self._own_change
        self._version, self._own_change = version, False
        return changed
