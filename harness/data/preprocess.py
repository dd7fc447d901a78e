"""Model-input preparation of stamps: centre crop/pad to the model size and a noise-scaled asinh stretch.

Real and simulated sets come in different units (counts, nanomaggies, arbitrary), so each image
and band is scaled by its own robust noise level (1.4826 x MAD) and compressed with asinh. This
is a per-image operation: no statistic is shared across images, so no split leaks into another.
"""

from __future__ import annotations

import numpy as np

from harness.errors import BadInput


def crop_or_pad(images: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop (or zero-pad) (N, C, H, W) stamps to (N, C, size, size)."""
    n, c, h, w = images.shape
    if h >= size and w >= size:
        y0, x0 = (h - size) // 2, (w - size) // 2
        return images[:, :, y0:y0 + size, x0:x0 + size]
    out = np.zeros((n, c, size, size), dtype=images.dtype)
    y0, x0 = (size - h) // 2, (size - w) // 2
    out[:, :, max(0, y0):max(0, y0) + min(h, size), max(0, x0):max(0, x0) + min(w, size)] = \
        images[:, :, max(0, -y0):max(0, -y0) + min(h, size), max(0, -x0):max(0, -x0) + min(w, size)]
    return out


def normalise(images: np.ndarray, softening: float = 3.0, chunk: int = 2048) -> np.ndarray:
    """asinh(x / (softening * sigma)) per image and band, sigma = robust noise of that stamp."""
    out = np.empty(images.shape, dtype=np.float32)
    for s in range(0, images.shape[0], chunk):
        x = np.asarray(images[s:s + chunk], dtype=np.float32)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        med = np.median(flat, axis=-1, keepdims=True)
        sigma = 1.4826 * np.median(np.abs(flat - med), axis=-1, keepdims=True)
        sigma = np.where(sigma > 0, sigma, np.maximum(flat.std(axis=-1, keepdims=True), 1e-12))
        out[s:s + chunk] = np.arcsinh((flat - med) / (softening * sigma)).reshape(x.shape)
    return out


def prepare(images: np.ndarray, size: int) -> np.ndarray:
    """What the models see: cropped/padded to `size`, normalised, float32, finite."""
    if images.ndim != 4:
        raise BadInput(f"images must be (N, C, H, W), got shape {images.shape}")
    return normalise(crop_or_pad(images, size))
