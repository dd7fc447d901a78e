"""Colour cutouts for people: the one g, r, i -> RGB renderer and the one contact-sheet layout.

Shared by `data show` (random cutouts of a set) and the report (the images a model ranks highest
and lowest), so both show a cutout the same way. A leaf module: numpy, matplotlib and
`harness.errors` only, so `harness.data` and `harness.report` can both import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from harness.errors import BadInput


@dataclass
class Tile:
    """One cutout on a sheet: a (C, H, W) or (H, W) image, its title, and the title's colour
    (None: the current text colour)."""

    image: np.ndarray
    title: str
    colour: str | None = None


def _bands(img: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (3, H, W) as R, G, B = i, r, g, with each band's sky (its median) removed."""
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise BadInput(f"a cutout must be (bands, height, width) or (height, width), got shape {x.shape}")
    x = x - np.median(x, axis=(1, 2), keepdims=True)
    if x.shape[0] >= 3:
        return x[[2, 1, 0]]
    if x.shape[0] == 2:
        return np.stack([x[1], x.mean(0), x[0]])
    return np.repeat(x, 3, axis=0)


def _top(x: np.ndarray) -> float:
    top = np.percentile(x, 99.5)
    return top if top > 0 else (np.abs(x).max() or 1.0)


def rgb(img: np.ndarray, top: float | None = None) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1]: bands g, r, i shown as B, G, R with an asinh stretch.

    Sky is removed per band (median). `top` is the value shown at full brightness: by default the
    image's own 99.5th percentile, so faint arcs stay visible next to a bright lens galaxy; pass
    `sheet_top(images)` to give a whole sheet one stretch, so brightness differences stay visible.
    """
    x = _bands(img)
    top = _top(x) if top is None else top
    soft = 0.1 * top
    out = np.arcsinh(np.clip(x, 0, None) / soft) / np.arcsinh(top / soft)
    return np.clip(out, 0, 1).transpose(1, 2, 0)


def sheet_top(images: list[np.ndarray] | np.ndarray) -> float:
    """One `top` for `rgb` over several cutouts: the 99.5th percentile of all their sky-removed bands."""
    return float(_top(np.stack([_bands(i) for i in images])))


def contact_sheet(sections: list[tuple[str, list[Tile]]], title: str, *, per_row: int = 8,
                  tile_size: tuple[float, float] = (1.55, 1.8), fontsize: float = 8, top: float | None = None,
                  origin: str = "upper") -> Figure:
    """A grid of cutouts under `title`: each section starts a new row and, when named, is labelled
    on its left. `top` as in `rgb` (None: one stretch per cutout). Returns the Figure (no pyplot)."""
    sections = [(name, tiles) for name, tiles in sections if tiles]
    if not sections:
        raise BadInput(f"contact sheet '{title}': no cutouts to draw")
    cols = min(per_row, max(len(tiles) for _, tiles in sections))
    rows_per = [int(np.ceil(len(tiles) / cols)) for _, tiles in sections]
    lines = max(t.title.count("\n") + 1 for _, tiles in sections for t in tiles)
    fig = Figure(figsize=(tile_size[0] * cols, tile_size[1] * sum(rows_per) + 0.6))
    grid = fig.subplots(sum(rows_per), cols, squeeze=False)
    for ax in grid.ravel():
        ax.set_axis_off()
    row0 = 0
    for (name, tiles), nr in zip(sections, rows_per):
        for j, t in enumerate(tiles):
            ax = grid[row0 + j // cols, j % cols]
            ax.imshow(rgb(t.image, top), interpolation="nearest", origin=origin)
            ax.set_title(t.title, fontsize=fontsize, **({} if t.colour is None else {"color": t.colour}))
        if name:
            grid[row0, 0].text(-0.08, 0.5, name, transform=grid[row0, 0].transAxes, rotation=90,
                               ha="right", va="center", fontsize=fontsize)
        row0 += nr
    fig.suptitle(title, x=0.01, ha="left", fontsize=fontsize + 2)
    fig.subplots_adjust(wspace=0.05, hspace=0.3 + 0.15 * (lines - 1))  # room for each title line
    if not any(name for name, _ in sections):  # no section labels: no left margin to keep for them
        fig.subplots_adjust(left=0.02, right=0.98)
    return fig
