"""The backups' sizes over time, as the geometry of a small SVG line chart.

The admin page draws it on the server, so it needs no JavaScript and shows in any browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

WIDTH = 640
HEIGHT = 180
# Room for the size labels on the left and the date labels underneath.
LEFT = 80
RIGHT = 12
TOP = 12
BOTTOM = 28


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    name: str
    size: int
    display: str


@dataclass(frozen=True)
class SizeChart:
    points: list[Point]
    largest: int
    first_display: str
    last_display: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def label_y(self) -> int:
        return self.bottom + 18


def size_chart(backups: Sequence[dict[str, Any]]) -> SizeChart | None:
    """The chart of ``services.list_backups()`` rows (any order); None without backups."""
    rows = sorted(backups, key=lambda b: (b["created_at"], b["name"]))
    if not rows:
        return None
    first: datetime = rows[0]["created_at"]
    span = (rows[-1]["created_at"] - first).total_seconds()
    largest = max(int(b["size"]) for b in rows)
    plot_width = WIDTH - RIGHT - LEFT
    plot_height = HEIGHT - BOTTOM - TOP
    points = []
    for index, row in enumerate(rows):
        if span > 0:
            share = (row["created_at"] - first).total_seconds() / span
        else:
            # Backups made within the same second: spread them out so that each one shows.
            share = index / (len(rows) - 1) if len(rows) > 1 else 0.5
        height = row["size"] / largest if largest else 0.0
        points.append(
            Point(
                x=LEFT + share * plot_width,
                y=TOP + (1 - height) * plot_height,
                name=row["name"],
                size=row["size"],
                display=row["display"],
            )
        )
    return SizeChart(
        points=points,
        largest=largest,
        first_display=rows[0]["display"],
        last_display=rows[-1]["display"],
    )
