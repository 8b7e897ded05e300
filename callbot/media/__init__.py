"""Media engine: files in, RTP out; RTP in, files out. The stages, in the order media flows:

Sending (file -> peer)
  decoder.py    decode any file PyAV reads into 48 kHz 20 ms audio frames and scaled video
  cache.py      encode once: each prompt's frames become Opus/VP8 packets a single time
  loops.py      seamless loops of an encoded prompt (one period, repeated)
  feeds.py      what a `Playback` reads from: the shared encoded prompt, or a per-call decode
  playback.py   `Playback`: one file being played into a call
  clock.py      the shared 20 ms clock every outgoing track is paced by (absolute deadlines)
  tracks.py     the call's outgoing tracks (never end; silence between playbacks)
  fastpath.py   the lean per-packet path that hands encoded Opus straight to the RTP sender
  reports.py    the RTCP reports of every fast-path sender and receiver, in one pass
  (then callbot/peer.py and aiortc: SRTP, ICE, the socket)
  pcm.py        or, for legs whose stack encodes (SIP), PCM decoded once per output format

Receiving (peer -> file)
  jitter.py     received audio packets go to the call's hub as they come
  incoming.py   one hub per kind of remote media, fanning frames/packets out to sinks
  recorder.py   `Recording`/`TrackRecorder`: what a call receives, into files
  writers.py    crash-tolerant file writers per container (.wav .ogg .webm .mp4 ...)
  ogg.py        received Opus into Ogg pages, written by callbot itself (no mux per packet)
  vp8.py        what storing VP8 as received needs to know of a frame

Either way
  endpoint.py   the file side of the media API shared by 1:1 and group calls
  live.py       a live track (e.g. what the peer sends) played into a call
  dtmf.py       RFC 4733 telephone-events and in-band DTMF, both ways
  tones.py      sine tones and in-band DTMF as samples
  opus.py       Opus packet helpers; analysis.py: level, frequency, tone and DTMF detection
  pool.py       the worker threads for media work that must not block the event loop
"""

from .playback import Playback
from .recorder import Recording, TrackRecorder, recording_name

__all__ = ["Playback", "Recording", "TrackRecorder", "recording_name"]
