"""The relay's `GET /metrics`, in the Prometheus text exposition format (version 0.0.4).

A process that also runs bots adds its own metrics (the media clock) as `MetricsSource`s given
to the relay: this module knows nothing of media."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .messages import ERROR_CODES
from .relay_core import RelayCore

#: Extra lines for /metrics, asked for at each scrape (e.g. `embedded.media_clock_metrics`).
MetricsSource = Callable[[], Iterable[str]]


def metric_lines(
    name: str, kind: str, help_text: str, samples: list[tuple[str, float]]
) -> list[str]:
    """One metric in the text format: HELP and TYPE lines, then one line per labelled sample."""
    return [
        f"# HELP {name} {help_text}",
        f"# TYPE {name} {kind}",
        *(f"{name}{labels} {value:g}" for labels, value in samples),
    ]


def metrics_text(core: RelayCore, loop_lag: float, sources: Iterable[MetricsSource] = ()) -> str:
    """Connections, users, calls, messages and errors by code, event-loop lag, then `sources`."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend(metric_lines(name, kind, help_text, samples))

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
    for source in sources:
        lines.extend(source())
    return "\n".join(lines) + "\n"
