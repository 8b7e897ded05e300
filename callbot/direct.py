"""Two in-process calls wired straight to each other, no relay: for tests and `callbot demo`.

Each side's protocol messages are queued to the other and applied in order by one task per
side, exactly as the relay client would deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .call import Call
from .config import CallConfig


class _Port:
    """One side's `CallSignaling`: sending puts the message in the other side's inbox."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.peer: _Port | None = None

    async def send(self, message: dict[str, Any]) -> None:
        assert self.peer is not None
        self.peer.inbox.put_nowait(message)


async def _deliver(port: _Port, call: Call) -> None:
    while call.state != "ended":
        await call.handle_signal(await port.inbox.get())


def _follow(call: Call, port: _Port) -> None:
    task = asyncio.get_running_loop().create_task(_deliver(port, call))
    call.on("ended", lambda *_: task.cancel())


async def connect_direct(
    *,
    video: bool = False,
    accept_video: bool | None = None,
    caller_config: CallConfig | None = None,
    callee_config: CallConfig | None = None,
    metadata: dict[str, Any] | None = None,
    timeout: float = 20.0,
) -> tuple[Call, Call]:
    """Place a call from an in-process caller to an in-process callee and wait until both are
    connected. The callee answers with video when `accept_video` (default: `video`)."""
    caller_port, callee_port = _Port(), _Port()
    caller_port.peer, callee_port.peer = callee_port, caller_port
    caller = Call(
        direction="outbound",
        peer="callee",
        signaling=caller_port,
        config=caller_config,
        video=video,
        metadata=metadata,
    )
    _follow(caller, caller_port)
    await caller.start()
    offer = await callee_port.inbox.get()
    callee = Call(
        direction="inbound",
        peer="caller",
        signaling=callee_port,
        config=callee_config,
        call_id=offer["call_id"],
        remote_offer=offer["sdp"],
        metadata=offer.get("metadata"),
    )
    _follow(callee, callee_port)
    await callee_port.send({"type": "call_ringing", "call_id": callee.id})
    await callee.answer(video=video if accept_video is None else accept_video)
    try:
        await asyncio.gather(caller.wait_connected(timeout), callee.wait_connected(timeout))
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.gather(caller.hangup("failed"), callee.hangup("failed"))
        raise
    return caller, callee
