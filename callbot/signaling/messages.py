"""The relay's message schema, sans I/O: every client message type and its fields, the limits,
the error codes, and encode/decode/validate. Both ends use it: the relay core (relay_core.py)
validates what clients send, and the client (client.py) reads frames with the same limits.
docs/protocol.md is the reference for every message, field and error.
"""

from __future__ import annotations

import json
import re
import reprlib
import typing
from collections.abc import Mapping
from types import UnionType
from typing import Any, Literal, NotRequired, TypedDict, overload

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

# -- the messages, one TypedDict each (docs/protocol.md sections 3 and 4) ----------------------
# Client -> relay messages are the `ClientMessage` union: CLIENT_MESSAGES, the table `validate`
# checks frames against, is derived from them. The relay forwards a call message without `to`
# and with `from` (the `Delivered*` types); its own are `Welcome` ... `PresenceUpdate`.
# Every frame also carries `v` (added by `encode`, checked by `validate`), left out here.

Signature = str | dict[str, Any] | None
"""`sig`: forwarded untouched; callbot sends and checks {"alg": "ed25519", "key", "sig"}."""


class CallClaim(TypedDict):
    """An item of `hello.calls`: a call this client is still in, after a reconnect."""

    call_id: str
    peer: str


class _To(TypedDict):
    to: str


class _ToOptional(TypedDict):
    to: NotRequired[str]


_From = TypedDict("_From", {"from": str})  # `from` is a Python keyword


class _CallId(TypedDict):
    call_id: str


class _OfferBody(TypedDict):
    sdp: str
    metadata: NotRequired[dict[str, Any] | None]  # application data: any JSON object
    sig: NotRequired[Signature]


class _AnswerBody(_CallId):
    sdp: str
    sig: NotRequired[Signature]


class _RejectBody(_CallId):
    reason: Literal["busy", "decline"]


class _IceBody(_CallId):
    candidate: NotRequired[dict[str, Any] | None]  # an RTCIceCandidateInit, not looked into


class _HangupBody(_CallId):
    reason: NotRequired[str]


class _RenegotiateBody(_CallId):
    sdp: str
    description_type: NotRequired[str]


class _MediaStatusBody(_CallId):
    audio_muted: bool
    video_muted: bool
    deafened: NotRequired[bool]


class _TransferBody(_CallId):
    target: str
    replaces: NotRequired[str | None]


class _InviteBody(TypedDict):
    room: int | str
    kind: Literal["videoroom", "audiobridge"]
    janus: NotRequired[str | None]


class Hello(TypedDict):
    type: Literal["hello"]
    token: str
    role: NotRequired[str]  # "user" or "bot" (checked by validate)
    max_calls: NotRequired[int | None]
    calls: NotRequired[list[CallClaim]]
    client: NotRequired[str]


class Refresh(TypedDict):
    type: Literal["refresh"]
    token: str


class CallOffer(_CallId, _To, _OfferBody):
    type: Literal["call_offer"]
    grant: NotRequired[str]  # attended transfer: the grant of the `transfer` received


class CallRinging(_CallId, _ToOptional):
    type: Literal["call_ringing"]


class CallAnswer(_AnswerBody, _ToOptional):
    type: Literal["call_answer"]


class CallReject(_RejectBody, _ToOptional):
    type: Literal["call_reject"]


class Ice(_IceBody, _ToOptional):
    type: Literal["ice"]


class Hangup(_HangupBody, _ToOptional):
    type: Literal["hangup"]


class Renegotiate(_RenegotiateBody, _ToOptional):
    type: Literal["renegotiate"]


class MediaStatus(_MediaStatusBody, _ToOptional):
    type: Literal["mediastatus"]


class Hold(_CallId, _ToOptional):
    type: Literal["hold"]


class Resume(_CallId, _ToOptional):
    type: Literal["resume"]


class Transfer(_TransferBody, _ToOptional):
    type: Literal["transfer"]


class PresenceSet(TypedDict):
    type: Literal["presence_set"]
    status: str  # available, away or dnd (checked by validate, like the rest below)
    text: NotRequired[str | None]
    visible_to: NotRequired[str | list[str]]  # "everyone" or user ids


class PresenceSubscribe(TypedDict):
    type: Literal["presence_subscribe"]
    users: list[str]


class PresenceUnsubscribe(TypedDict):
    type: Literal["presence_unsubscribe"]
    users: list[str]


class GroupInvite(_To, _InviteBody):
    type: Literal["group_invite"]


CallMessage = (
    CallOffer | CallRinging | CallAnswer | CallReject | Ice | Hangup | Renegotiate | MediaStatus
    | Hold | Resume | Transfer
)  # fmt: skip
"""What a party sends about one call (all carry `call_id`)."""
ClientMessage = (
    Hello | Refresh | CallMessage | PresenceSet | PresenceSubscribe | PresenceUnsubscribe
    | GroupInvite
)  # fmt: skip
"""Every message a client sends to the relay."""


# Relay -> client.


class Welcome(TypedDict):
    type: Literal["welcome"]
    user: str
    role: str  # "user" or "bot"
    session_id: str
    expires_at: float
    ice_servers: list[dict[str, Any]]  # RTCIceServer-shaped: urls, username, credential
    janus: str | None


class Refreshed(TypedDict):
    type: Literal["refreshed"]
    expires_at: float


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    fatal: bool
    call_id: NotRequired[str]


class PresenceState(TypedDict):
    """One user's presence as a watcher sees it (`status` also on_call, offline, unknown)."""

    user: str
    status: str
    text: str | None


class PresenceList(TypedDict):
    type: Literal["presence_list"]
    users: list[PresenceState]


class PresenceUpdate(PresenceState):
    type: Literal["presence_update"]


class DeliveredOffer(_CallId, _OfferBody, _From):
    """A `call_offer` as the callee gets it; `replaces`/`transferred_by` only ever come from
    the relay (the replacing call of an attended transfer)."""

    type: Literal["call_offer"]
    replaces: NotRequired[str]
    transferred_by: NotRequired[str]


class DeliveredRinging(_CallId, _From):
    type: Literal["call_ringing"]


class DeliveredAnswer(_AnswerBody, _From):
    type: Literal["call_answer"]


class DeliveredReject(_RejectBody, _From):
    type: Literal["call_reject"]


class DeliveredIce(_IceBody, _From):
    type: Literal["ice"]


class DeliveredHangup(_HangupBody, _From):
    type: Literal["hangup"]


class DeliveredRenegotiate(_RenegotiateBody, _From):
    type: Literal["renegotiate"]


class DeliveredMediaStatus(_MediaStatusBody, _From):
    type: Literal["mediastatus"]


class DeliveredHold(_CallId, _From):
    type: Literal["hold"]


class DeliveredResume(_CallId, _From):
    type: Literal["resume"]


class DeliveredTransfer(_TransferBody, _From):
    type: Literal["transfer"]
    grant: NotRequired[str]  # set by the relay on an attended transfer


class DeliveredInvite(_InviteBody, _From):
    type: Literal["group_invite"]


PeerMessage = (
    DeliveredOffer | DeliveredRinging | DeliveredAnswer | DeliveredReject | DeliveredIce
    | DeliveredHangup | DeliveredRenegotiate | DeliveredMediaStatus | DeliveredHold
    | DeliveredResume | DeliveredTransfer
)  # fmt: skip
"""A call message from the other party (or the relay speaking for it: busy, hangup)."""
RelayMessage = (
    Welcome | Refreshed | ErrorMessage | PresenceList | PresenceUpdate | PeerMessage
    | DeliveredInvite
)  # fmt: skip
"""Every message the relay sends to a client."""

AppMessage = ErrorMessage | PresenceList | PresenceUpdate | PeerMessage | DeliveredInvite
"""What the relay sends besides session bookkeeping (welcome, refreshed): what a client
hands on to its application."""


@overload
def delivered(message: CallOffer, sender: str) -> DeliveredOffer: ...
@overload
def delivered(message: GroupInvite, sender: str) -> DeliveredInvite: ...
@overload
def delivered(message: CallMessage, sender: str) -> PeerMessage: ...
def delivered(message: CallMessage | GroupInvite, sender: str) -> PeerMessage | DeliveredInvite:
    """The copy of `message` the relay delivers: without `to` (nor an offer's `grant`, which
    the relay uses up), with `from`: the sender's user id."""
    out = {k: v for k, v in message.items() if k not in ("to", "grant")}
    out["from"] = sender
    return typing.cast(PeerMessage | DeliveredInvite, out)


FieldSchema = tuple[tuple[type, ...], bool]
"""A field's accepted runtime types, and whether it is required."""


def _runtime_types(hint: Any) -> tuple[type, ...]:
    """The JSON value types a field annotation admits, in order (`None` as NoneType)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        return tuple(dict.fromkeys(t for arg in typing.get_args(hint) for t in _runtime_types(arg)))
    if origin is Literal:
        return tuple(dict.fromkeys(type(value) for value in typing.get_args(hint)))
    if hint is None or hint is _NONE:
        return (_NONE,)
    if origin in (list, dict):
        return (origin,)
    if typing.is_typeddict(hint):
        return (dict,)
    if hint in (str, int, bool, float):
        return (hint,)
    raise TypeError(f"no JSON type for the annotation {hint!r}")


def fields_of(message_type: type) -> tuple[str, dict[str, FieldSchema]]:
    """(type name, field -> schema) of one message TypedDict, fields in declaration order."""
    hints = typing.get_type_hints(message_type, include_extras=True)
    (kind,) = typing.get_args(hints.pop("type"))
    fields: dict[str, FieldSchema] = {}
    for name, hint in hints.items():
        required = typing.get_origin(hint) is not NotRequired
        fields[name] = (_runtime_types(hint if required else typing.get_args(hint)[0]), required)
    return kind, fields


#: type -> field -> (accepted types, required), derived from `ClientMessage`. Unknown fields
#: are ignored, never forwarded.
CLIENT_MESSAGES: dict[str, dict[str, FieldSchema]] = dict(
    fields_of(t) for t in typing.get_args(ClientMessage)
)

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


def encode(message: Mapping[str, object]) -> str:
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


def validate(message: dict[str, Any]) -> ClientMessage:
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
    return typing.cast(ClientMessage, clean)


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


def presence_lists(states: list[PresenceState]) -> list[PresenceList]:
    """`presence_list` messages for `states`: one, or as many as needed for each to fit in
    MAX_MESSAGE_BYTES (500 users with long non-ASCII texts come to about 1.6 MB)."""
    budget = MAX_MESSAGE_BYTES - len(encode({"type": "presence_list", "users": []}))
    chunks: list[list[PresenceState]] = [[]]
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
) -> ErrorMessage:
    """An `error` message; `fatal` says whether the relay closes the connection after it
    (by default: whether `code` is one of the fatal codes)."""
    fatal = code in FATAL_CODES if fatal is None else fatal
    out: ErrorMessage = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if call_id is not None:
        out["call_id"] = call_id
    return out
