"""Contact sheets: a grid of colour cutouts from a set folder, to eyeball what a card produces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data import imageset
from harness.errors import BadInput


def _rgb(img: np.ndarray, soft: float) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) Lupton et al. (2004) asinh colour: reddest band R, bluest B.

    The g and r weights follow the usual survey colour-image convention of boosting the blue
    bands, so flat-spectrum (blue) arcs look blue beside red early-type galaxies.
    """
    from astropy.visualization import make_lupton_rgb

    if img.shape[0] >= 3:
        r, g, b = img[2] * 1.0, img[1] * 1.3, img[0] * 2.0
    else:
        r = g = b = img[0]
    return make_lupton_rgb(r, g, b, minimum=0.0, stretch=soft, Q=8) / 255.0


def contact_sheet(path: Path, out: Path, n: int = 24, seed: int = 0) -> Path:
    """Draw `n` random cutouts of the set at `path` to the PNG `out`, titled with label and catalog values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"{root}: no such image-set folder")
    s = imageset.load(root)
    if n <= 0:
        raise BadInput(f"n must be positive, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(s), size=min(n, len(s)), replace=False))
    # one stretch for the whole sheet so brightness differences stay visible
    soft = float(np.percentile(np.asarray(s.images[idx])[:, :, 24:40, 24:40], 99) * 0.5 + 1e-6)
    cols = min(6, len(idx))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.45 * rows), squeeze=False)
    cat = s.catalog
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        ax.imshow(_rgb(np.asarray(s.images[i], dtype=np.float64), soft), origin="lower", interpolation="nearest")
        lab = int(s.labels[i])
        title = {1: "lens", 0: "non-lens"}.get(lab, "unlabelled")
        row = cat.iloc[i]
        hn = row.get("truth_hard_negative", "")
        if isinstance(hn, str) and hn:
            title += f" ({hn})"
        bits = []
        if "truth_theta_E" in cat and lab == 1:
            bits.append(f"θE={row['truth_theta_E']:.2f}\"")
        if "mag_r" in cat:
            bits.append(f"r={row['mag_r']:.1f}")
        if "truth_n_lensed_pix" in cat and lab == 1:
            bits.append(f"npx={int(row['truth_n_lensed_pix'])}")
        ax.set_title(title + "\n" + " ".join(bits), fontsize=7)
    fig.suptitle(f"{s.name} ({s.meta.get('domain', '')}, fingerprint {s.fingerprint})", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
