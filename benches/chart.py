"""The chart of the main ratios (var/bench/ratios.png): each targeted result as a share of its target."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from benches.common import Row, format_target, format_value


def write_chart(rows: Sequence[Row], path: Path, title: str) -> Path | None:
    """One bar per row that has a target, its length the result over the target (1 = met); None if none."""
    targeted = [row for row in rows if row.ratio is not None]
    if not targeted:
        return None
    labels = [row.scenario for row in targeted]
    ratios = [row.ratio or 0.0 for row in targeted]
    matplotlib.use("Agg")  # no display: render to a file
    colours = ["#2e7d32" if row.met else "#c62828" for row in targeted]
    figure, axes = plt.subplots(figsize=(11, 0.55 * len(targeted) + 1.6))
    positions = list(range(len(targeted)))[::-1]
    axes.barh(positions, ratios, color=colours)
    axes.axvline(1.0, color="black", linewidth=1, linestyle="--")
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("result / target (log scale; right of the dashed line: met)")
    for position, row, ratio in zip(positions, targeted, ratios, strict=True):
        text = f" {format_value(row.value, row.unit)} (target {format_target(row)})"
        axes.text(ratio, position, text, va="center", fontsize=7)
    low = min(min(ratios), 0.5) / 2
    high = max(max(ratios), 1.0) * 8
    axes.set_xlim(low, high)
    axes.set_title(textwrap.fill(title, 120), fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
