"""Group calls through a Janus SFU: VideoRoom (media per participant) and AudioBridge (mixed).

    room = await bot.start_group_call(invite=["alice", "bob"])   # or audio_only=True
    room.send_audio_file("hello.wav")
    alice, = await room.wait_for_participants("alice")
    room.record_incoming(alice, audio_path="alice.wav", video_path="alice.webm")

See docs/howto/group-calls.md for the Janus configuration callbot expects.
"""

from .calls import GroupInvite
from .janus import JanusError
from .room import Participant, Room

__all__ = ["GroupInvite", "JanusError", "Participant", "Room"]
