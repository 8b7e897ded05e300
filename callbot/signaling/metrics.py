"""The relay's `GET /metrics`, in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from ..media.clock import AUDIO_TICKER
from .protocol import ERROR_CODES, RelayCore


def metrics_text(core: RelayCore, loop_lag: float) -> str:
    """Connections, users, calls, messages and errors by code, and event-loop lag."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    metric(
        "callbot_relay_connections",
        "gauge",
        "Open WebSocket connections.",
        [("", core.connection_count)],
    )
    metric(
        "callbot_relay_users",
        "gauge",
        "Users with at least one open connection.",
        [("", core.user_count)],
    )
    metric("callbot_relay_calls", "gauge", "Calls ringing or established.", [("", core.call_count)])
    metric(
        "callbot_relay_messages_total",
        "counter",
        "Messages received from clients.",
        [("", core.counters.get("messages", 0))],
    )
    metric(
        "callbot_relay_errors_total",
        "counter",
        "Errors sent to clients, by code.",
        [
            (f'{{code="{code}"}}', core.counters.get(f"error:{code}", 0))
            for code in sorted(ERROR_CODES)
        ],
    )
    metric(
        "callbot_relay_loop_lag_seconds",
        "gauge",
        "How late the relay's event loop ran its last 250 ms timer.",
        [("", loop_lag)],
    )
    if AUDIO_TICKER.max_lag or AUDIO_TICKER.dropped:  # bots run in this process (callbot run)
        metric(
            "callbot_media_clock_lag_seconds",
            "gauge",
            "How late this process's 20 ms audio clock ran: p99 over the last 10 s.",
            [("", AUDIO_TICKER.lag_percentile(99))],
        )
        metric(
            "callbot_audio_slots_dropped_total",
            "counter",
            "20 ms audio slots skipped because the process fell behind (all calls).",
            [("", AUDIO_TICKER.dropped)],
        )
    return "\n".join(lines) + "\n"
