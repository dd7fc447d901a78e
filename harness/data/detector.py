"""Detector and pipeline effects of another camera, applied to a calibrated noisy stamp.

The harness normalises each stamp per band by its noise, so a gain, zero-point or sky-level change
is removed exactly and is no appearance shift at all. These effects survive that normalisation
and are not covered by the lens finder's augmentations (flips, shifts, blur, white noise, flux
jitter), so they are the instrument shift unsupervised adaptation is built for:
- `resample`: the stamp was warped onto the survey grid with bilinear interpolation at a random
  sub-pixel offset, which correlates neighbouring pixels' noise (and lowers its variance);
- `sky_gradient`: a residual linear sky from background subtraction, up to this many noise sigmas
  at the stamp edge, in a random direction;
- `cosmic_rays`: mean number of unrejected cosmic-ray tracks per stamp, each in one band;
- `bad_columns`: probability that a stamp holds a hot column in one band;
- `nan_edge`: probability that the stamp runs off the survey footprint: every pixel beyond a random
  line (covering up to 40% of the stamp) is NaN, as in drizzled HST cutouts. Not for model input as
  such: preprocessing sets non-finite pixels to 0, so this tests that path.
All draws come from the caller's generator, which is separate from the scene's, so a card without
a `detector` block renders exactly as before.
"""

from __future__ import annotations

import math

import numpy as np


def _bilinear_shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Resample (C, H, W) at (x + dx, y + dy) by bilinear interpolation, edges repeated."""
    p = np.pad(img, ((0, 0), (0, 1), (0, 1)), mode="edge")
    return ((1 - dy) * ((1 - dx) * p[:, :-1, :-1] + dx * p[:, :-1, 1:])
            + dy * ((1 - dx) * p[:, 1:, :-1] + dx * p[:, 1:, 1:]))


def _cosmic_ray(out: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> None:
    c, h, w = out.shape
    b = int(rng.integers(c))
    length, angle = rng.uniform(1, 6), rng.uniform(0, math.pi)
    y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
    for t in np.linspace(0, length, max(2, int(length * 2))):
        i, j = int(y0 + t * math.sin(angle)), int(x0 + t * math.cos(angle))
        if 0 <= i < h and 0 <= j < w:
            out[b, i, j] = max(out[b, i, j], rng.uniform(10, 50) * sigma[b])


def apply(img: np.ndarray, spec: dict, sigma: np.ndarray, rng: np.random.Generator,
          truth: dict) -> np.ndarray:
    """The card's detector effects on one calibrated stamp (C, H, W); records what it did in `truth`."""
    out = np.array(img, dtype=np.float64)
    c, h, w = out.shape
    if spec.get("resample"):
        dx, dy = rng.uniform(0, 1, 2)
        out = _bilinear_shift(out, dx, dy)
    if spec.get("sky_gradient"):
        t = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = ((xx - (w - 1) / 2) * math.cos(t) + (yy - (h - 1) / 2) * math.sin(t)) / ((max(h, w) - 1) / 2)
        amp = rng.uniform(0, float(spec["sky_gradient"]), c) * sigma
        out += amp[:, None, None] * ramp[None]
    n_cr = int(rng.poisson(float(spec.get("cosmic_rays", 0.0))))
    for _ in range(n_cr):
        _cosmic_ray(out, sigma, rng)
    hot = bool(rng.random() < float(spec.get("bad_columns", 0.0)))
    if hot:
        b = int(rng.integers(c))
        out[b, :, int(rng.integers(w))] += rng.uniform(5, 20) * sigma[b]
    truth["truth_cosmic_rays"], truth["truth_bad_column"] = n_cr, int(hot)
    if "nan_edge" in spec:
        cut = bool(rng.random() < float(spec["nan_edge"]))
        if cut:
            t, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.4)
            yy, xx = np.mgrid[0:h, 0:w]
            along = ((xx - (w - 1) / 2) * math.cos(t) + (yy - (h - 1) / 2) * math.sin(t))
            along /= (max(h, w) - 1) / 2
            out[:, along > 1 - 2 * depth] = np.nan
        truth["truth_nan_edge"] = int(cut)
    return out
