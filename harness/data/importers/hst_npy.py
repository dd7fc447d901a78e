"""Flat HST `.npy` layout (DeepLense Specific Test VI, SSL on real data), `--format hst-npy`.

One folder (searched recursively) of `.npy` images: `*_hst.npy` files are lenses, `nl_*_hst.npy`
non-lenses (names matched without case); any other `.npy` file is ignored and counted. NaN footprint
edges are repaired up to half a stamp. The files carry no header, so the pixel
scale is a nominal ACS/WFC drizzled 0.05"/pixel unless overridden. It writes one `ssl-real` set (the
task of Test VI: `run --task ssl-real --hard <set>`) with a stratified train/val split; `score` also
takes it, as lens / non-lens cutouts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.imageset import ImageSet
from harness.data.importers import register_format
from harness.data.importers.npy import NpyItem, npy_files, npy_imageset, stack_npy
from harness.data.importers.quirks import VAL_SHARE, Options, Quirks, fingerprint, report
from harness.data.splits import train_val
from harness.errors import BadInput

HST_PIXEL_SCALE = 0.05  # ACS/WFC drizzled scale; an assumption, the files do not say
# HST cutouts carry NaN where the footprint ends (the `hst-lenses` card draws such edges 5-40% deep):
# repaired (0, as training fills them) up to half the stamp, where other layouts drop at 5%
HST_NAN_MAX = 0.5


@register_format("hst-npy")
def import_hst(path: Path, name: str, scratch: Path, opt: Options) -> dict[str, ImageSet]:
    """`*_hst.npy` are lenses, `nl_*_hst.npy` non-lenses; other .npy files are ignored and counted."""
    quirks = Quirks("hst-npy", nan_max=HST_NAN_MAX)
    files = npy_files(path, quirks, path)
    items = []
    for f in files:   # names matched without case: NL_3_HST.npy is a non-lens
        if not f.name.lower().endswith("_hst.npy"):
            quirks.add("unrecognised", f.relative_to(path).as_posix())
            continue
        items.append(NpyItem(f, f.relative_to(path).as_posix(), 0 if f.name.lower().startswith("nl_") else 1))
    if not items:
        raise BadInput(f"{path}: no *_hst.npy files")
    stack, kept = stack_npy(items, path, scratch, quirks, opt)
    labels = np.array([items[i].label for i in kept], dtype=np.int64)
    meta = {"name": name, "kind": "ssl-real", "domain": "real", "classes": ["non-lens", "lens"],
            "source_format": "hst-npy", "source_path": str(path.resolve()),
            "fingerprint": fingerprint(path, files), "quirks": quirks.as_meta()}
    iset = npy_imageset(items, kept, stack.filled(), train_val(labels, VAL_SHARE, opt.seed), meta,
                        opt.pixel_scale or HST_PIXEL_SCALE)
    report(quirks, opt.log)
    lenses, non_lenses = int(labels.sum()), int((labels == 0).sum())
    opt.log(f"hst-npy: {len(kept)} images ({lenses} lenses, {non_lenses} non-lenses)")
    return {"": iset}
