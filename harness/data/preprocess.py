"""Model-input preparation of stamps: centre crop/pad (or resample) to the model size, then a per-stamp
stretch.

Real and simulated sets come in different units (counts, nanomaggies, arbitrary), so each image
and band is scaled by its own robust noise level (1.4826 x MAD) and compressed with asinh, or (the
substructure task, as DeepLense's sets are) min-max scaled to [0, 1]. Both are per-image operations:
no statistic is shared across images, so no split leaks into another. Resampling maps stamps of
different pixel scales onto one angular grid, so two cameras meet in one model input.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import BadInput

if TYPE_CHECKING:
    import torch


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


def normalise(images: np.ndarray, softening: float = 3.0, chunk: int = 256) -> np.ndarray:
    """asinh(x / (softening * sigma)) per image and band, sigma = robust noise of that stamp.

    Chunks of stamps run on torch's intra-op thread count (numpy releases the GIL in its medians and
    ufuncs), so `score` and data preparation use every core the process was given; every number is
    computed per stamp, so the result is the same bit for bit on any thread count."""
    import torch

    out = np.empty(images.shape, dtype=np.float32)

    def one(s: int) -> None:
        x = np.asarray(images[s:s + chunk], dtype=np.float32)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        med = np.median(flat, axis=-1, keepdims=True)
        sigma = 1.4826 * np.median(np.abs(flat - med), axis=-1, keepdims=True)
        sigma = np.where(sigma > 0, sigma, np.maximum(flat.std(axis=-1, keepdims=True), 1e-12))
        out[s:s + chunk] = np.arcsinh((flat - med) / (softening * sigma)).reshape(x.shape)

    starts = range(0, images.shape[0], chunk)
    threads = min(torch.get_num_threads(), len(starts), 8)   # at most 2,048 stamps in flight, as before
    if threads <= 1:
        for s in starts:
            one(s)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, starts))
    return out


def normalise_torch(images: torch.Tensor, softening: float = 3.0) -> torch.Tensor:
    """`normalise` on a tensor, on its device: scoring on a GPU stretches each chunk there instead of
    in numpy on one CPU core. The same numbers to float precision (numpy's median of an even count
    is the mean of the two middle values, so it is taken from a sort, not `torch.median`)."""
    import torch

    x = torch.nan_to_num(images.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.flatten(2)
    med = _median(flat)
    sigma = 1.4826 * _median((flat - med).abs())
    std = flat.std(dim=-1, keepdim=True, correction=0).clamp_min(1e-12)
    sigma = torch.where(sigma > 0, sigma, std)
    return torch.asinh((flat - med) / (softening * sigma)).view_as(x)


def _median(t: torch.Tensor) -> torch.Tensor:
    n, s = t.shape[-1], t.sort(dim=-1).values
    return ((s[..., (n - 1) // 2] + s[..., n // 2]) / 2).unsqueeze(-1)


def resample(images: np.ndarray, pixel_scale: float, fov: float, size: int, chunk: int = 2048) -> np.ndarray:
    """The central `fov` arcsec of each stamp on a `size` x `size` grid: cropped to the nearest whole
    pixel count, then area-averaged (antialiased bilinear) onto the new grid."""
    import torch
    import torch.nn.functional as F

    n_pix = min(images.shape[-1], images.shape[-2], max(1, round(fov / pixel_scale)))
    x = crop_or_pad(images, n_pix)
    if n_pix == size:
        return np.asarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        t = torch.from_numpy(np.nan_to_num(np.asarray(x[s:s + chunk], dtype=np.float32)))
        out[s:s + chunk] = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                         align_corners=False).numpy()
    return out


def minmax(images: np.ndarray) -> np.ndarray:
    """Each stamp and band scaled to [0, 1] (a constant stamp becomes 0)."""
    x = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


def crop_to(images: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop each side longer than `size` to `size`; shorter sides are left as they are."""
    h, w = images.shape[-2:]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return images[..., y0:y0 + min(h, size), x0:x0 + min(w, size)]


def prepare(images: np.ndarray, size: int, stretch: str = "asinh") -> np.ndarray:
    """What the models see: cropped to `size`, stretched, then padded to `size` where the stamps are
    smaller (so the stretch measures each stamp's own pixels, not the padding; the padding's 0 is the
    stretched sky level, or the stamp's minimum under min-max), float32, finite."""
    if images.ndim != 4:
        raise BadInput(f"images must be (N, C, H, W), got shape {images.shape}")
    x = crop_to(images, size)
    x = minmax(x) if stretch == "minmax" else normalise(x)
    return x if x.shape[-2:] == (size, size) else crop_or_pad(x, size)
