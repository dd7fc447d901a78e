"""Unlabelled survey cutouts as `.npy` files, `--format cutouts-npy`: the layout `score` applies a model to.

One folder (searched recursively) of `.npy` stamps, (H, W) or (C, H, W), under any names; a stamp's
`id` is its file's relative path. Nothing is labelled, so the set is for scoring only (`score --images
DIR --format cutouts-npy --pixel-scale S`): its one split is `all` and every label is -1, so `run`
refuses it as a domain (it has no train, pool or test split). Junk, unreadable and odd-shaped files are
skipped and counted, and NaN pixels repaired, as in the other `.npy` layouts; channel-last stamps are
refused. The files carry no header, so `--pixel-scale` is required (the aperture of the measured
catalog columns). Those columns are of bands `c0, c1, …` (or `x`), not a simulator's `g, r, i`, so
the stamps are scored with an image-only run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.imageset import ImageSet
from harness.data.importers import register_format
from harness.data.importers.npy import NpyItem, npy_files, npy_imageset, stack_npy
from harness.data.importers.quirks import Options, Quirks, fingerprint, report
from harness.errors import BadInput

UNLABELLED = -1


@register_format("cutouts-npy")
def import_cutouts(path: Path, name: str, scratch: Path, opt: Options) -> dict[str, ImageSet]:
    """Every readable `.npy` stamp of the majority shape, unlabelled, in one split `all`."""
    if opt.pixel_scale is None:
        raise BadInput("--format cutouts-npy needs --pixel-scale (arcsec/pixel): .npy files carry no header")
    quirks = Quirks("cutouts-npy")
    files = npy_files(path, quirks, path)
    if not files:
        raise BadInput(f"{path}: no .npy files")
    items = [NpyItem(f, f.relative_to(path).as_posix(), UNLABELLED) for f in files]
    stack, kept = stack_npy(items, path, scratch, quirks, opt)
    meta = {"name": name, "kind": "lens-finding", "domain": "real", "classes": [], "labelled": False,
            "source_format": "cutouts-npy", "source_path": str(path.resolve()),
            "fingerprint": fingerprint(path, files), "quirks": quirks.as_meta()}
    iset = npy_imageset(items, kept, stack.filled(), {"all": np.arange(len(kept))}, meta, opt.pixel_scale)
    report(quirks, opt.log)
    opt.log(f"cutouts-npy: {len(kept)} unlabelled stamps of shape {quirks.shape}")
    return {"": iset}
