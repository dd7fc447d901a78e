"""Observable catalog columns measured from (noisy) images, as a survey pipeline would.

Every column here is computed from pixels alone, never from simulation truth, so it is a
legitimate model input (subject to the leak guard in `features.py`).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd


def measure(images: np.ndarray, bands: list[str], pixel_scale: float, zeropoint: float | dict = 27.0,
            aperture_arcsec: float = 1.5) -> pd.DataFrame:
    """Aperture magnitudes per band, colours, r-band half-light radius and ellipticity.

    images: (N, C, H, W) in counts per pixel (sky-subtracted). Returns one row per image.
    """
    x = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=0.0)
    n, c, h, w = x.shape
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r = np.hypot(yy - cy, xx - cx) * pixel_scale
    ap = r <= aperture_arcsec
    out: dict[str, np.ndarray] = {}
    for b, name in enumerate(bands):
        zp = zeropoint[name] if isinstance(zeropoint, dict) else zeropoint
        flux = x[:, b][:, ap].sum(axis=1)
        out[f"mag_{name}"] = zp - 2.5 * np.log10(np.clip(flux, 1e-3, None))
    for a, b in pairwise(bands):
        out[f"colour_{a}{b}"] = out[f"mag_{a}"] - out[f"mag_{b}"]
    ref = x[:, bands.index("r") if "r" in bands else c // 2]
    ref = np.clip(ref, 0, None) * (r <= 4 * aperture_arcsec)
    tot = ref.sum(axis=(1, 2)) + 1e-9
    # half-light radius: radius enclosing half the (clipped) flux within 4 apertures
    order = np.argsort(r.ravel())
    cum = np.cumsum(ref.reshape(n, -1)[:, order], axis=1) / tot[:, None]
    half = np.argmax(cum >= 0.5, axis=1)
    out["r_half_arcsec"] = r.ravel()[order][half]
    # second-moment ellipticity
    mx = (ref * xx).sum(axis=(1, 2)) / tot
    my = (ref * yy).sum(axis=(1, 2)) / tot
    dx = xx[None] - mx[:, None, None]
    dy = yy[None] - my[:, None, None]
    qxx = (ref * dx * dx).sum(axis=(1, 2)) / tot
    qyy = (ref * dy * dy).sum(axis=(1, 2)) / tot
    qxy = (ref * dx * dy).sum(axis=(1, 2)) / tot
    out["ellipticity"] = np.hypot(qxx - qyy, 2 * qxy) / (qxx + qyy + 1e-9)
    return pd.DataFrame({k: v.astype(np.float32) for k, v in out.items()})
