"""Contact sheets: a grid of colour cutouts from a set folder, to eyeball what a card produces.

Drawn by the shared `harness.render` contact sheet, with one stretch for the whole sheet so
brightness differences between cutouts stay visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.data import imageset
from harness.errors import BadInput
from harness.render import Tile, sheet_top
from harness.render import contact_sheet as draw_sheet


def _title(label: int, row: pd.Series, catalog: pd.DataFrame) -> str:
    """Label (and hard-negative kind) on the first line; Einstein radius, r magnitude and lensed pixels
    on the second, where the catalog has them."""
    title = {1: "lens", 0: "non-lens"}.get(label, "unlabelled")
    hn = row.get("truth_hard_negative", "")
    if isinstance(hn, str) and hn:
        title += f" ({hn})"
    bits = []
    if "truth_theta_E" in catalog and label == 1:
        bits.append(f"θE={row['truth_theta_E']:.2f}\"")
    if "mag_r" in catalog:
        bits.append(f"r={row['mag_r']:.1f}")
    if "truth_n_lensed_pix" in catalog and label == 1:
        bits.append(f"npx={int(row['truth_n_lensed_pix'])}")
    return title + "\n" + " ".join(bits)


def contact_sheet(path: Path, out: Path, n: int = 24, seed: int = 0) -> Path:
    """Draw `n` random cutouts of the set at `path` to the PNG `out`, titled with label and catalog values."""
    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"{root}: no such image-set folder")
    s = imageset.load(root)
    if n <= 0:
        raise BadInput(f"n must be positive, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(s), size=min(n, len(s)), replace=False))
    images = [np.asarray(s.images[i], dtype=np.float64) for i in idx]
    tiles = [Tile(img, _title(int(s.labels[i]), s.catalog.iloc[i], s.catalog)) for img, i in zip(images, idx)]
    fig = draw_sheet([("", tiles)], f"{s.name} ({s.meta.get('domain', '')}, fingerprint {s.fingerprint})",
                     per_row=6, tile_size=(2.2, 2.2), fontsize=7, top=sheet_top(images), origin="lower")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight", facecolor="white")
    return out
