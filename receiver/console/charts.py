"""The overview's charts, drawn on the server as SVG geometry a template writes out.

One chart per series (webhooks received, events delivered, failed attempts) over the same
intervals, each scaled to its own peak: a bar per interval, a few time labels under it.  No
chart library and no script: the page stays within its Content-Security-Policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.operator.models import ActivityOut

__all__ = ["Bar", "Chart", "charts"]

WIDTH = 720
HEIGHT = 120
LABELS = 6

SERIES = (
    ("received", "Webhooks received"),
    ("delivered", "Events delivered"),
    ("failed", "Failed attempts"),
)


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    """Shown on hover: the interval and its count."""


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    total: int
    peak: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    width: int = WIDTH
    height: int = HEIGHT


def _label(seconds: int, text: str) -> str:
    # "2026-12-03T13:05:00+00:00": the time of day, or the day for daily-ish intervals.
    return text[5:10] if seconds >= 3600 else text[11:16]


def charts(activity: ActivityOut) -> list[Chart]:
    points = activity.points
    n = max(1, len(points))
    step = WIDTH / n
    out = []
    for key, title in SERIES:
        values = [int(getattr(p, key)) for p in points]
        peak = max(values, default=0)
        bars = []
        for i, (point, value) in enumerate(zip(points, values, strict=True)):
            if not value:
                continue
            height = max(1.0, HEIGHT * value / peak)
            when = point.start.strftime("%Y-%m-%d %H:%M")
            bars.append(
                Bar(
                    x=round(i * step, 2),
                    y=round(HEIGHT - height, 2),
                    width=round(max(step - 0.5, 0.5), 2),
                    height=round(height, 2),
                    title=f"{when} UTC: {value}",
                )
            )
        every = max(1, n // LABELS)
        labels = [
            (round(i * step, 2), _label(activity.bucket_seconds, points[i].start.isoformat()))
            for i in range(0, len(points), every)
        ]
        out.append(Chart(key, title, sum(values), peak, bars, labels))
    return out
