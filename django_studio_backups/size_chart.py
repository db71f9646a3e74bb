"""The backups' sizes over time, as the geometry of a small SVG line chart.

The admin page draws it on the server, so it needs no JavaScript and shows in any browser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .services import BackupFile

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


def size_chart(
    backups: Sequence[BackupFile], display: Callable[[datetime], str]
) -> SizeChart | None:
    """The chart of ``backups`` (any order), their times shown by ``display``; None without
    backups."""
    ordered = sorted(backups, key=lambda b: (b.created_at, b.name))
    if not ordered:
        return None
    first = ordered[0].created_at
    span = (ordered[-1].created_at - first).total_seconds()
    largest = max(b.size for b in ordered)
    plot_width = WIDTH - RIGHT - LEFT
    plot_height = HEIGHT - BOTTOM - TOP
    points = []
    for index, backup in enumerate(ordered):
        if span > 0:
            share = (backup.created_at - first).total_seconds() / span
        else:
            # Backups made within the same second: spread them out so that each one shows.
            share = index / (len(ordered) - 1) if len(ordered) > 1 else 0.5
        height = backup.size / largest if largest else 0.0
        points.append(
            Point(
                x=LEFT + share * plot_width,
                y=TOP + (1 - height) * plot_height,
                name=backup.name,
                size=backup.size,
                display=display(backup.created_at),
            )
        )
    return SizeChart(
        points=points,
        largest=largest,
        first_display=points[0].display,
        last_display=points[-1].display,
    )
