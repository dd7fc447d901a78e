"""DeepLense class-folder `.npy` layout (Common Test I, substructure classes), `--format deeplense-npy`.

One folder per class (e.g. `no/`, `sphere/`, `vort/`), each holding one `.npy` image per file,
either directly under the copy or under `train/`, `val/` [and `test/`] folders, which then become
the splits (a missing `val/` is carved out of `train/`; with no such folders the split is a
stratified train/val). The set also gets target splits (pool / 20% labelled / test, a `test/` folder
being the test split), so it can be either domain of a `--task substructure` run. Classes are
numbered in sorted folder-name order. Wrapper folders that
unzipping adds (a lone `dataset/`) are stepped into, and macOS junk is skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.imageset import ImageSet
from harness.data.importers import register_format
from harness.data.importers.npy import NpyItem, npy_files, npy_imageset, stack_npy
from harness.data.importers.quirks import VAL_SHARE, Options, Quirks, fingerprint, report
from harness.data.splits import LABELLED_SHARE, require_nonempty, target_splits, train_val
from harness.errors import BadInput

# Model I's scale, assumed when `--pixel-scale` is not given (the files carry no header). It sets the
# aperture of measure() and, on the substructure task, the field each stamp is resampled onto
# (`domains.model_input`): Model II (0.101) and III (0.08) imported without it map at the wrong scale.
DEEPLENSE_PIXEL_SCALE = 0.05
TEST_SHARE = 0.2       # held-out test share of a target domain without a test/ folder (as the cards)


# split folders as people name them (matched without case): Train/, validation/, valid/ ...
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


def _split_dirs(root: Path) -> dict[str, Path]:
    """The train / val / test folders of `root` by their canonical names; two for one split are refused."""
    out: dict[str, Path] = {}
    for d in _class_dirs(root):
        if (g := SPLIT_NAMES.get(d.name.lower())) is not None:
            if g in out:
                raise BadInput(f"{root}: both {out[g].name}/ and {d.name}/ look like the {g} split; keep one")
            out[g] = d
    return out


def _descend_wrappers(path: Path) -> Path:
    """Unzipped copies often add a wrapper folder (`dataset/`); step into lone subfolders."""
    while True:
        subs = _class_dirs(path)
        if len(subs) == 1 and not any(path.glob("*.npy")) and subs[0].name.lower() not in SPLIT_NAMES:
            inner = [p for p in subs[0].iterdir() if p.is_dir()]
            if inner:
                path = subs[0]
                continue
        return path


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


@register_format("deeplense-npy")
def import_deeplense(path: Path, name: str, scratch: Path, opt: Options) -> dict[str, ImageSet]:
    """Class folders (optionally under train/ val/ [test/]); classes sorted by folder name."""
    root = _descend_wrappers(path)
    group_dirs = _split_dirs(root)
    if group_dirs and "train" not in group_dirs:
        raise BadInput(f"{root}: has {', '.join(d.name for d in group_dirs.values())}/ but no train/")
    if group_dirs and (other := [d.name for d in _class_dirs(root) if d not in group_dirs.values()]):
        raise BadInput(f"{root}: folder {other[0]}/ is neither a split (train/, val/, test/) nor under one")
    group_dirs = group_dirs or {"": root}
    classes = sorted({d.name for gd in group_dirs.values() for d in _class_dirs(gd)})
    if not classes:
        raise BadInput(f"{root}: no class folders (expected e.g. no/, sphere/, vort/)")
    folded = {}
    for c in classes:   # `no/` in train and `No/` in val would be two classes, and shift every label
        if (twin := folded.setdefault(c.lower(), c)) != c:
            raise BadInput(f"{root}: class folders {twin}/ and {c}/ differ only in case; give them one name")
    quirks = Quirks("deeplense-npy")
    items, scanned = [], []
    for g, gd in group_dirs.items():
        for d in _class_dirs(gd):
            files = npy_files(d, quirks, root)
            scanned += files
            items += [NpyItem(f, f.relative_to(root).as_posix(), classes.index(d.name), g) for f in files]
    if not items:
        raise BadInput(f"{root}: no .npy images in the class folders ({', '.join(classes)})")
    stack, kept = stack_npy(items, root, scratch, quirks, opt)
    labels = np.array([items[i].label for i in kept])
    splits = require_nonempty(_group_splits([items[i].group for i in kept], labels, opt), labels, root)
    meta = {"name": name, "kind": "substructure", "domain": "real", "classes": classes,
            "source_format": "deeplense-npy", "source_path": str(path.resolve()),
            "fingerprint": fingerprint(root, scanned), "quirks": quirks.as_meta()}
    scale = opt.pixel_scale or DEEPLENSE_PIXEL_SCALE
    if not opt.pixel_scale:
        opt.log(f"warning: deeplense-npy: no --pixel-scale, so Model I's {DEEPLENSE_PIXEL_SCALE}\"/px is "
                "assumed (Model II is 0.101, Model III 0.08)")
    iset = npy_imageset(items, kept, stack.filled(), splits, meta, scale)
    report(quirks, opt.log)
    opt.log(f"deeplense-npy: {len(kept)} images in {len(classes)} classes ({', '.join(classes)})")
    return {"": iset}


def _group_splits(groups: list[str], labels: np.ndarray, opt: Options) -> dict[str, np.ndarray]:
    """Source splits train/val from the folders when present (else stratified, VAL_SHARE), and target
    splits pool/labelled/test (a test/ folder is the test split), so the set can be either domain."""
    g = np.array(groups)
    if not any(groups):
        splits = train_val(labels, VAL_SHARE, opt.seed)
    else:
        splits = {k: np.flatnonzero(g == k).astype(np.int64) for k in ("train", "val") if (g == k).any()}
        if "val" not in splits:  # only train/ survived: carve val out of it
            tv = train_val(labels[splits["train"]], VAL_SHARE, opt.seed)
            splits.update({k: splits["train"][v] for k, v in tv.items()})
    test = np.flatnonzero(g == "test") if (g == "test").any() else None
    splits.update(target_splits(labels, LABELLED_SHARE, test, TEST_SHARE, opt.seed))
    return splits
