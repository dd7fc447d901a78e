"""Reading loose `.npy` image files, shared by the `deeplense-npy` and `hst-npy` formats.

Each file is one image, (H, W) or (C, H, W), of any numeric dtype; the files carry no header, so
the caller supplies labels and a nominal pixel scale. Files of the most common shape are stacked;
unreadable, mis-shaped and mostly-NaN files are dropped and counted as quirks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.data.imageset import ImageSet
from harness.data.importers.quirks import (
    Options,
    Quirks,
    Stack,
    is_junk,
    majority,
    repair_nan,
    with_measurements,
)
from harness.errors import BadInput


@dataclass
class NpyItem:
    """One image file, its path relative to the copy's root (its catalog `id`) and its label."""

    file: Path
    rel: str
    label: int
    group: str = ""  # deeplense: train/val/test folder, or "" for a flat layout


def _npy_shape(f: Path) -> tuple[int, int, int] | None:
    """(C, H, W) from the .npy header alone; None if unreadable or not an image."""
    try:
        a = np.load(f, mmap_mode="r", allow_pickle=False)
    except Exception:  # noqa: BLE001 - truncated / foreign files raise many types
        return None
    if a.dtype.kind not in "fiub":
        return None
    shape = a.shape
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    return None


def stack_npy(items: list[NpyItem], root: Path, scratch: Path, quirks: Quirks,
              opt: Options) -> tuple[Stack, list[int]]:
    """Stack the items of the most common (C, H, W) shape; others are skipped and counted."""
    shapes = []
    for it in items:
        s = _npy_shape(it.file)
        shapes.append(s)
        if s is None:
            quirks.add("unreadable", it.rel, it.label >= 0)
    shape = majority(s for s in shapes if s is not None)
    if shape is None:
        raise BadInput(f"{root}: no readable .npy images")
    quirks.shape = "x".join(map(str, shape))
    if shape[2] <= 5 < min(shape[:2]):   # (H, W, C) files read as C = H bands: refuse, not mangle
        raise BadInput(f"{root}: the stamps look channel-last ({quirks.shape} read as C x H x W); "
                       "save them as (C, H, W) or (H, W)")
    ok = []
    for i, s in enumerate(shapes):
        if s is not None and s != shape:
            quirks.add("shape", items[i].rel, items[i].label >= 0)
        elif s is not None:
            ok.append(i)
    stack = Stack(scratch / "images.npy", len(ok), shape)
    kept = []
    for i in tqdm(ok, desc=quirks.where, unit="img", disable=not opt.progress):
        img = _load_npy(items[i], shape, quirks)
        if img is not None:
            stack.add(img)
            kept.append(i)
    if not kept:
        raise BadInput(f"{root}: no usable .npy images ({quirks.dropped()})")
    return stack, kept


def _load_npy(it: NpyItem, shape: tuple, quirks: Quirks) -> np.ndarray | None:
    try:
        a = np.load(it.file, allow_pickle=False).astype(np.float32).reshape(shape)
    except Exception:  # noqa: BLE001 - the header was fine but the body may be truncated
        quirks.add("unreadable", it.rel, it.label >= 0)   # unlabelled stamps (-1) are not "labelled" losses
        return None
    return repair_nan(a, quirks, it.rel, it.label >= 0)


def npy_imageset(items: list[NpyItem], kept: list[int], images: np.ndarray, splits: dict,
                 meta: dict, pixel_scale: float) -> ImageSet:
    """The ImageSet of the kept items: `id` = relative path, bands `x` or `c0, c1, ...`, measurements.

    A class left without images (its files all dropped as quirks) is refused, naming those files."""
    labels = np.array([items[i].label for i in kept], dtype=np.int64)
    names = list(meta.get("classes") or [])
    for k, name in enumerate(names):
        if not (labels == k).any():
            lost = sorted(it.rel for it in items if it.label == k)
            raise BadInput(f"{meta.get('source_path', 'import')}: class '{name}' has no usable image"
                           + (f" (dropped: {', '.join(lost[:3])}{' ...' if len(lost) > 3 else ''}: "
                              "unreadable or not the set's shape)" if lost else ""))
    bands = ["x"] if images.shape[1] == 1 else [f"c{k}" for k in range(images.shape[1])]
    ids = pd.DataFrame({"id": [items[i].rel for i in kept]})
    catalog = with_measurements(ids, images, bands, pixel_scale)
    meta = {**meta, "bands": bands, "pixel_scale": pixel_scale}
    return ImageSet(images=images, catalog=catalog, labels=labels, splits=splits, meta=meta)


def npy_files(folder: Path, quirks: Quirks, root: Path) -> list[Path]:
    """The .npy files under `folder` (any case of the suffix; symlinked folders followed, each real
    folder once), macOS junk skipped and counted."""
    out, seen = [], set()
    for here, dirs, names in os.walk(folder, followlinks=True):
        if (real := os.path.realpath(here)) in seen:   # a link back up the tree: walked already
            dirs[:] = []
            continue
        seen.add(real)
        for f in (Path(here) / n for n in names if n.lower().endswith(".npy")):
            if is_junk(f.relative_to(root)):
                quirks.add("junk")
            elif f.is_file():
                out.append(f)
    return sorted(out)
