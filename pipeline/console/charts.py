"""Server-drawn charts: geometry computed here, drawn by the template as SVG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

WIDTH = 480
ROW = 26
LABEL = 110


def timing_chart(timings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Horizontal bars per stage: p95 (light) behind p50 (dark), on one seconds scale."""
    top = max([float(t["p95_s"]) for t in timings] + [0.001])
    span = WIDTH - LABEL - 70
    bars = []
    for i, t in enumerate(timings):
        bars.append(
            {
                "stage": t["stage"],
                "y": i * ROW + 4,
                "p50_w": round(span * float(t["p50_s"]) / top, 1),
                "p95_w": round(span * float(t["p95_s"]) / top, 1),
                "p50": t["p50_s"],
                "p95": t["p95_s"],
                "count": t["count"],
            }
        )
    return {
        "width": WIDTH,
        "height": max(1, len(bars)) * ROW + 8,
        "label": LABEL,
        "bars": bars,
        "max_s": top,
    }
