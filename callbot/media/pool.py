"""The shared worker threads for media work that must not block the event loop.

One small pool per job for the whole process (never a thread per call): decoding files ahead
of playback, and encoding/writing recordings. Each user keeps at most one job in flight, so the
work queued here is bounded by the number of active playbacks and recordings.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_WORKERS = max(2, min(8, os.cpu_count() or 2))

DECODE_POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="callbot-decode")
WRITE_POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="callbot-write")
