"""The on-disk image set every stage reads: images, catalog, labels, splits, meta.

Layout of a set folder:
    images.npy      float32 (N, C, H, W), opened memory-mapped
    labels.npy      int64 (N,), -1 = unlabelled
    catalog.csv     one row per image; `id` column; `truth_*` columns are simulation/catalog truth
    meta.json       name, kind, bands, pixel_scale, fingerprint, classes, ...
    card.yaml       copy of the dataset card (generated sets only)
    splits/<name>.npy   int64 index arrays, written once beside the arrays

Writes are atomic: everything goes into a hidden temporary sibling folder that is renamed
into place at the end, so an interrupted write never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import BadInput
from harness.fs import atomic_dir, write_checksums

REQUIRED_FILES = ("images.npy", "labels.npy", "catalog.csv", "meta.json")


@dataclass
class ImageSet:
    """Images (N, C, H, W) float32, a catalog DataFrame, int labels (-1 = unlabelled), splits."""

    images: np.ndarray
    catalog: pd.DataFrame
    labels: np.ndarray
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    root: Path | None = None

    def __post_init__(self) -> None:
        validate(self)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name if self.root else "unnamed"))

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))

    def split(self, name: str) -> np.ndarray:
        """Indices of a named split; a clear error naming the available ones if absent."""
        if name not in self.splits:
            have = ", ".join(sorted(self.splits)) or "none"
            raise BadInput(f"{self.name}: no split '{name}' (has: {have})")
        return self.splits[name]


def validate(s: ImageSet) -> None:
    """Shape, dtype and consistency checks with messages that name what is wrong."""
    where = str(s.root) if s.root else s.meta.get("name", "image set")
    if s.images.ndim != 4:
        raise BadInput(f"{where}: images must be (N, C, H, W), got shape {tuple(s.images.shape)}")
    if s.images.dtype != np.float32:
        raise BadInput(f"{where}: images must be float32, got {s.images.dtype}")
    n = s.images.shape[0]
    if n == 0:
        raise BadInput(f"{where}: the image set is empty")
    if s.labels.shape != (n,):
        raise BadInput(f"{where}: labels have shape {s.labels.shape}, expected ({n},)")
    if len(s.catalog) != n:
        raise BadInput(f"{where}: catalog has {len(s.catalog)} rows for {n} images")
    if "id" not in s.catalog.columns:
        raise BadInput(f"{where}: catalog has no 'id' column")
    for k, idx in s.splits.items():
        idx = np.asarray(idx)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise BadInput(f"{where}: split '{k}' holds indices outside [0, {n})")
        if np.unique(idx).size != idx.size:
            raise BadInput(f"{where}: split '{k}' repeats indices")


def save(s: ImageSet, out: Path, card_text: str | None = None, overwrite: bool = False) -> Path:
    """Write an ImageSet atomically to `out` and return `out`."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "images.npy", np.ascontiguousarray(s.images, dtype=np.float32))
        np.save(tmp / "labels.npy", np.asarray(s.labels, dtype=np.int64))
        s.catalog.to_csv(tmp / "catalog.csv", index=False)
        (tmp / "splits").mkdir()
        for k, idx in s.splits.items():
            np.save(tmp / "splits" / f"{k}.npy", np.asarray(idx, dtype=np.int64))
        meta = dict(s.meta)
        meta.setdefault("n", len(s))
        meta["shape"] = list(s.images.shape[1:])
        meta["splits"] = {k: len(v) for k, v in s.splits.items()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if card_text is not None:
            (tmp / "card.yaml").write_text(card_text)
        write_checksums(tmp)
    return out


def check_finite(s: ImageSet, chunk: int = 2048) -> None:
    """Refuse a set with NaN or infinite pixels, naming how many images and the first id (the importers
    repair or drop such images; a set that still holds them was written by something else)."""
    bad = [i + k for i in range(0, len(s), chunk)
           for k in np.flatnonzero(~np.isfinite(np.asarray(s.images[i:i + chunk])).all(axis=(1, 2, 3)))]
    if bad:
        where = s.root / "images.npy" if s.root else s.name
        raise BadInput(f"{where}: {len(bad)} image(s) hold NaN or infinite pixels (first: id "
                       f"{s.catalog['id'].iloc[bad[0]]}); repair or drop them")


def load(path: Path | str, mmap: bool = True) -> ImageSet:
    """Open a set folder (images memory-mapped). Any corruption is a BadInput naming the file."""
    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"{root}: not an image-set folder")
    for f in REQUIRED_FILES:
        if not (root / f).is_file():
            raise BadInput(f"{root / f}: missing (not a complete image set)")
    try:
        images = np.load(root / "images.npy", mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise BadInput(f"{root / 'images.npy'}: unreadable ({e})") from None
    try:
        labels = np.load(root / "labels.npy").astype(np.int64)
    except (ValueError, OSError, EOFError) as e:
        raise BadInput(f"{root / 'labels.npy'}: unreadable ({e})") from None
    try:
        catalog = pd.read_csv(root / "catalog.csv", dtype={"id": str})   # "1e1" and "007" are names
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise BadInput(f"{root / 'catalog.csv'}: unreadable ({e})") from None
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (ValueError, OSError) as e:
        raise BadInput(f"{root / 'meta.json'}: unreadable ({e})") from None
    splits = {}
    if (root / "splits").is_dir():
        for f in sorted((root / "splits").glob("*.npy")):
            try:
                splits[f.stem] = np.load(f).astype(np.int64)
            except (ValueError, OSError, EOFError) as e:
                raise BadInput(f"{f}: unreadable ({e})") from None
    return ImageSet(images=images, catalog=catalog, labels=labels, splits=splits, meta=meta, root=root)
