"""The relay's message schema, sans I/O: every client message type and its fields, the limits,
the error codes, and encode/decode/validate. Both ends use it: the relay core (relay_core.py)
validates what clients send, and the client (client.py) reads frames with the same limits.
docs/protocol.md is the reference for every message, field and error.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

from ..errors import CallbotError
from .presence import EVERYONE, MAX_TEXT, MAX_WATCHED, STATUSES

VERSION = 1
#: The largest frame, in bytes of UTF-8, either way: the relay refuses bigger ones and never
#: sends one (a forwarded copy that would be bigger is refused to its sender), so every client
#: can read all the relay sends.
MAX_MESSAGE_BYTES = 64 * 1024
#: WebSocket frames above this are cut by the transport (close 1009) on both ends; between
#: MAX_MESSAGE_BYTES and it, the relay answers with a typed error.
TRANSPORT_MAX_SIZE = 4 * MAX_MESSAGE_BYTES
#: Deepest nesting of arrays/objects inside one field (metadata, candidate, sig).
MAX_DEPTH = 32
ID_PATTERN = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}")  # always used with fullmatch

# Error codes (docs/protocol.md explains each).
AUTH_FAILED = "auth_failed"
AUTH_EXPIRED = "auth_expired"
SESSION_REVOKED = "session_revoked"
INVALID_MESSAGE = "invalid_message"
USER_OFFLINE = "user_offline"
CALL_FAILED = "call_failed"
CALL_NOT_FOUND = "call_not_found"
SESSION_LIMIT = "session_limit"
RATE_LIMITED = "rate_limited"
INTERNAL_ERROR = "internal_error"
FORBIDDEN = "forbidden"  # authenticated, but not allowed to do that (DESIGN §10)
ERROR_CODES = frozenset(
    {AUTH_FAILED, AUTH_EXPIRED, SESSION_REVOKED, INVALID_MESSAGE, USER_OFFLINE, CALL_FAILED,
     CALL_NOT_FOUND, SESSION_LIMIT, RATE_LIMITED, INTERNAL_ERROR, FORBIDDEN}
)  # fmt: skip
FATAL_CODES = frozenset({AUTH_FAILED, AUTH_EXPIRED, SESSION_REVOKED, SESSION_LIMIT})
#: WebSocket close codes sent after a fatal error.
CLOSE_CODES = {AUTH_FAILED: 4001, AUTH_EXPIRED: 4002, SESSION_REVOKED: 4003, SESSION_LIMIT: 4004,
               FORBIDDEN: 4005}  # fmt: skip

_NONE = type(None)
_REQ, _OPT = True, False

#: type -> field -> (accepted types, required). Unknown fields are ignored, never forwarded.
CLIENT_MESSAGES: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "hello": {"token": ((str,), _REQ), "role": ((str,), _OPT), "max_calls": ((int, _NONE), _OPT),
              "calls": ((list,), _OPT), "client": ((str,), _OPT)},
    "refresh": {"token": ((str,), _REQ)},
    "call_offer": {"call_id": ((str,), _REQ), "to": ((str,), _REQ), "sdp": ((str,), _REQ),
                   "metadata": ((dict, _NONE), _OPT), "sig": ((str, dict, _NONE), _OPT),
                   "grant": ((str,), _OPT)},
    "call_ringing": {"call_id": ((str,), _REQ), "to": ((str,), _OPT)},
    "call_answer": {"call_id": ((str,), _REQ), "sdp": ((str,), _REQ),
                    "sig": ((str, dict, _NONE), _OPT), "to": ((str,), _OPT)},
    "call_reject": {"call_id": ((str,), _REQ), "reason": ((str,), _REQ), "to": ((str,), _OPT)},
    "ice": {"call_id": ((str,), _REQ), "candidate": ((dict, _NONE), _OPT), "to": ((str,), _OPT)},
    "hangup": {"call_id": ((str,), _REQ), "reason": ((str,), _OPT), "to": ((str,), _OPT)},
    "renegotiate": {"call_id": ((str,), _REQ), "sdp": ((str,), _REQ),
                    "description_type": ((str,), _OPT), "to": ((str,), _OPT)},
    "mediastatus": {"call_id": ((str,), _REQ), "audio_muted": ((bool,), _REQ),
                    "video_muted": ((bool,), _REQ), "deafened": ((bool,), _OPT),
                    "to": ((str,), _OPT)},
    "hold": {"call_id": ((str,), _REQ), "to": ((str,), _OPT)},
    "resume": {"call_id": ((str,), _REQ), "to": ((str,), _OPT)},
    "transfer": {"call_id": ((str,), _REQ), "target": ((str,), _REQ),
                 "replaces": ((str, _NONE), _OPT), "to": ((str,), _OPT)},
    "presence_set": {"status": ((str,), _REQ), "text": ((str, _NONE), _OPT),
                     "visible_to": ((str, list), _OPT)},
    "presence_subscribe": {"users": ((list,), _REQ)},
    "presence_unsubscribe": {"users": ((list,), _REQ)},
    "group_invite": {"to": ((str,), _REQ), "room": ((int, str), _REQ), "kind": ((str,), _REQ),
                     "janus": ((str, _NONE), _OPT)},
}  # fmt: skip

#: Messages about an established call, forwarded to the other party as they are.
IN_CALL = frozenset({"ice", "renegotiate", "mediastatus", "hold", "resume", "transfer"})
#: Messages only the called side may send.
CALLEE_ONLY = frozenset({"call_ringing", "call_answer", "call_reject"})
REJECT_REASONS = frozenset({"busy", "decline"})
#: A `hangup` reason forwarded as sent; any other (control characters, spaces, over 64
#: characters) goes on as "hangup": it never reaches the peer, yet the call still ends.
REASON_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Janus plugins a `group_invite` may name, and the longest Janus URL it may carry.
ROOM_KINDS = frozenset({"videoroom", "audiobridge"})
MAX_URL = 1024
ROLES = frozenset({"bot", "user"})


class ProtocolError(CallbotError):
    """A message was refused; becomes an `error` message with this code."""

    def __init__(
        self, code: str, message: str, call_id: str | None = None, fatal: bool | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.call_id = call_id
        self.fatal = code in FATAL_CODES if fatal is None else fatal


def encode(message: dict[str, Any]) -> str:
    """Serialise a message, adding the protocol version."""
    return json.dumps({**message, "v": VERSION}, separators=(",", ":"))


def decode(data: str | bytes) -> dict[str, Any]:
    """Parse one frame into a JSON object with a string `type` (no schema check)."""
    if isinstance(data, bytes):
        raise ProtocolError(INVALID_MESSAGE, "binary frames are not accepted; send JSON text")
    if len(data.encode()) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            INVALID_MESSAGE, f"message of {len(data.encode())} bytes exceeds {MAX_MESSAGE_BYTES}"
        )
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(INVALID_MESSAGE, f"malformed JSON: {exc}") from None
    except RecursionError:  # the C parser recurses per level: `[[[[...` deep enough hits it
        raise ProtocolError(INVALID_MESSAGE, "JSON nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(INVALID_MESSAGE, "a message is a JSON object with a string 'type'")
    return message


def _shown(value: Any) -> str:
    """A short, escaped repr of a client value for an error text (bounded in size and depth)."""
    return reprlib.repr(value)


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests arrays/objects deeper than `limit` (iterative: any depth is safe)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # bool is an int in Python, never in the protocol
    return isinstance(value, types)


def validate(message: dict[str, Any]) -> dict[str, Any]:
    """Check a client message against its schema; returns only the known fields."""
    kind = message["type"]
    schema = CLIENT_MESSAGES.get(kind)
    call_id = message.get("call_id") if isinstance(message.get("call_id"), str) else None
    if schema is None:
        raise ProtocolError(INVALID_MESSAGE, f"unknown message type {_shown(kind)}", call_id)
    version = message.get("v", VERSION)
    if type(version) is not int or version != VERSION:
        raise ProtocolError(INVALID_MESSAGE, f"unsupported protocol version {_shown(version)}")
    clean: dict[str, Any] = {"type": kind}
    for name, (types, required) in schema.items():
        if name not in message:
            if required:
                raise ProtocolError(INVALID_MESSAGE, f"{kind}: missing field {name!r}", call_id)
            continue
        value = message[name]
        if not _is(value, types):
            expected = "/".join("null" if t is _NONE else t.__name__ for t in types)
            raise ProtocolError(
                INVALID_MESSAGE, f"{kind}: field {name!r} must be {expected}", call_id
            )
        if _too_deep(value):
            raise ProtocolError(
                INVALID_MESSAGE, f"{kind}: field {name!r} nests deeper than {MAX_DEPTH}", call_id
            )
        clean[name] = value
    for name in ("call_id", "to", "target", "replaces"):
        if isinstance(clean.get(name), str) and not ID_PATTERN.fullmatch(clean[name]):
            raise ProtocolError(
                INVALID_MESSAGE, f"{kind}: {name} {_shown(clean[name])} is not a valid id"
            )
    _check_values(clean, call_id)
    return clean


def _check_values(message: dict[str, Any], call_id: str | None) -> None:
    kind = message["type"]
    if kind == "hello":
        if message.get("role", "user") not in ROLES:
            raise ProtocolError(INVALID_MESSAGE, "hello: role must be 'bot' or 'user'")
        max_calls = message.get("max_calls")
        if max_calls is not None and max_calls < 1:
            raise ProtocolError(INVALID_MESSAGE, "hello: max_calls must be at least 1")
        for claim in message.get("calls", []):
            if not (
                isinstance(claim, dict)
                and isinstance(claim.get("call_id"), str)
                and ID_PATTERN.fullmatch(claim["call_id"])
                and isinstance(claim.get("peer"), str)
                and ID_PATTERN.fullmatch(claim["peer"])
            ):
                raise ProtocolError(INVALID_MESSAGE, "hello: calls items are {call_id, peer}")
    elif kind == "call_reject" and message["reason"] not in REJECT_REASONS:
        raise ProtocolError(INVALID_MESSAGE, "call_reject: reason must be busy or decline", call_id)
    elif kind == "hangup" and not REASON_PATTERN.fullmatch(message.get("reason", "hangup")):
        message["reason"] = "hangup"
    elif kind == "presence_set":
        if message["status"] not in STATUSES:
            raise ProtocolError(INVALID_MESSAGE, "presence_set: status is available, away or dnd")
        if len(message.get("text") or "") > MAX_TEXT:
            raise ProtocolError(INVALID_MESSAGE, f"presence_set: text over {MAX_TEXT} characters")
        _check_audience(message.get("visible_to", EVERYONE))
    elif kind == "group_invite":
        _check_invite(message)
    elif kind in ("presence_subscribe", "presence_unsubscribe"):
        users = message["users"]
        if len(users) > MAX_WATCHED or not all(
            isinstance(u, str) and ID_PATTERN.fullmatch(u) for u in users
        ):
            raise ProtocolError(
                INVALID_MESSAGE, f"{kind}: users is a list of at most {MAX_WATCHED} user ids"
            )


def _check_audience(audience: Any) -> None:
    """`presence_set.visible_to`: "everyone" or a list of user ids."""
    if audience == EVERYONE:
        return
    if not (
        isinstance(audience, list)
        and len(audience) <= MAX_WATCHED
        and all(isinstance(u, str) and ID_PATTERN.fullmatch(u) for u in audience)
    ):
        raise ProtocolError(
            INVALID_MESSAGE,
            f'presence_set: visible_to is "everyone" or a list of at most {MAX_WATCHED} user ids',
        )


def _check_invite(message: dict[str, Any]) -> None:
    room, janus = message["room"], message.get("janus")
    if message["kind"] not in ROOM_KINDS:
        raise ProtocolError(INVALID_MESSAGE, "group_invite: kind is videoroom or audiobridge")
    valid_room = 1 <= room < 2**63 if isinstance(room, int) else ID_PATTERN.fullmatch(room)
    if not valid_room:
        raise ProtocolError(INVALID_MESSAGE, "group_invite: room is a positive integer or an id")
    if janus is not None and (len(janus) > MAX_URL or not janus.startswith(("ws://", "wss://"))):
        raise ProtocolError(
            INVALID_MESSAGE, f"group_invite: janus is a ws:// or wss:// URL of at most {MAX_URL}"
        )


def presence_lists(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`presence_list` messages for `states`: one, or as many as needed for each to fit in
    MAX_MESSAGE_BYTES (500 users with long non-ASCII texts come to about 1.6 MB)."""
    budget = MAX_MESSAGE_BYTES - len(encode({"type": "presence_list", "users": []}))
    chunks: list[list[dict[str, Any]]] = [[]]
    used = 0
    for state in states:
        size = len(json.dumps(state, separators=(",", ":"))) + 1  # with its comma
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(state)
        used += size
    return [{"type": "presence_list", "users": chunk} for chunk in chunks]


def error(
    code: str, message: str, call_id: str | None = None, fatal: bool | None = None
) -> dict[str, Any]:
    """An `error` message; `fatal` says whether the relay closes the connection after it
    (by default: whether `code` is one of the fatal codes)."""
    fatal = code in FATAL_CODES if fatal is None else fatal
    out: dict[str, Any] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if call_id is not None:
        out["call_id"] = call_id
    return out
