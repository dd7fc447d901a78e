"""One look for every figure: seaborn theme as a context (no global rcParams change) and method colours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from harness.report import roles

BASELINE_GREY, ORACLE_GREY = "0.55", "0.15"
DOMAIN_COLOURS = {0: "#1f77b4", 1: "#ff7f0e"}
DOMAIN_NAMES = {0: "source (easy)", 1: "target (hard)"}
CLASS_MARKERS = ["o", "^", "s", "D", "v", "P", "X", "*"]


@contextmanager
def style() -> Iterator[None]:
    """Seaborn's whitegrid look, scoped to the figures drawn inside the block."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def palette(summary: pd.DataFrame) -> dict[str, object]:
    """Stable colours per method across all figures: greys for baselines and oracles (by stored role
    or oracle flag), tab10 colours for the rest in name order."""
    oracle = set(roles.methods_with(summary, roles.ORACLE)) | set(summary.loc[summary["oracle"], "method"])
    baseline = set(roles.methods_with(summary, roles.BASELINE))
    others = sorted(set(summary["method"]) - baseline - oracle)
    base = sns.color_palette("tab10", 10)
    colours = [c for i, c in enumerate(base) if i != 7]  # tab10's grey is reserved for the baseline
    if len(others) > len(colours):
        colours = sns.color_palette("husl", len(others))
    out: dict[str, object] = {m: colours[i] for i, m in enumerate(others)}
    out.update({m: ORACLE_GREY for m in oracle})
    out.update({m: BASELINE_GREY for m in baseline})
    return out


def line_style(oracle: bool, labels: bool) -> str:
    return "--" if oracle else ":" if labels else "-"


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=130, bbox_inches="tight", facecolor="white")
    return path
