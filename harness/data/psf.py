"""PSF kernels for the simulator: Gaussian or Moffat per band, optionally anisotropic.

A ground-based stack is close to round and Moffat-winged; another camera's optics can give a
Gaussian core elongated along a fixed direction (a band key `psf_e`, ellipticity (a-b)/(a+b),
with `psf_angle` in degrees). Flips and rot90 augmentations do not undo a fixed elongation, so
it is an appearance shift the source model has not seen.
"""

from __future__ import annotations

import math

import numpy as np

KSIZE = 31  # PSF kernel side in pixels (2.5" radius at HSC scale: wings beyond are negligible)


def kernel_grid(pixel_scale: float, ksize: int = KSIZE) -> tuple[np.ndarray, np.ndarray]:
    """Kernel pixel offsets in arcsec: (x, y), each (K, K)."""
    k = (np.arange(ksize) - ksize // 2) * pixel_scale
    return np.meshgrid(k, k)


def _r2(kx: np.ndarray, ky: np.ndarray, e: float, angle_deg: float) -> np.ndarray:
    """Squared elliptical radius with axis ratio (1-e)/(1+e) at `angle`, area-preserving (same FWHM
    on the geometric mean of the axes); e = 0 is the plain r^2."""
    if e == 0:
        return kx**2 + ky**2
    t = math.radians(angle_deg)
    u = kx * math.cos(t) + ky * math.sin(t)
    v = -kx * math.sin(t) + ky * math.cos(t)
    q = (1 - e) / (1 + e)
    return u**2 * q + v**2 / q


def psf_kernels(bands: list[str], band_specs: dict, fwhm: np.ndarray, kx: np.ndarray, ky: np.ndarray
                ) -> np.ndarray:
    """Per-band PSF kernels (C, K, K), unit sum, as each band's spec says."""
    ks = []
    for b, f in zip(bands, fwhm):
        spec = band_specs[b]
        r2 = _r2(kx, ky, float(spec.get("psf_e", 0.0)), float(spec.get("psf_angle", 0.0)))
        if spec["psf"] == "gaussian":
            s = f / 2.3548
            k = np.exp(-0.5 * r2 / s**2)
        else:
            beta = float(spec["moffat_beta"])
            alpha = f / (2 * math.sqrt(2 ** (1 / beta) - 1))
            k = (1 + r2 / alpha**2) ** (-beta)
        ks.append(k / k.sum())
    return np.stack(ks)
