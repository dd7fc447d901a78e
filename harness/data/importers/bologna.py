"""Bologna Lens Finding Challenge layout (DeepLense Specific Test II), `--format bologna`.

A copy holds `easy/` and `hard/`, each with folders Band1, Band2, Band3 of single-band FITS files
named `imageSDSS_<band letter>-<ID>.fits` (or .fit, .fts; .gz or .fz compressed; matched by letter,
not by folder, and stacked as g, r, i), and a catalog CSV per domain (`easy_test.csv`;
`hard_test_cut.csv` or `hard_test.csv`), beside the domain folders or inside them, with at least `ID`
and `is_lens` columns; hard is ~80% unlabelled (empty `is_lens`; a fully labelled hard catalog is
split as a card's target: a stratified test share, 20% labelled, the rest a pool whose labels methods
never see). The challenge's catalog
columns are simulation truths, so every catalog column is kept as `truth_<name>` (for analysis, never
a model input) unless it is named in `--catalog-columns`; the model's catalog inputs are the
observables measured from the pixels. An ID repeated with the same label is dropped (counted); with
conflicting labels the import is refused. It writes one set per domain: easy as a stratified
train/val (+ pool), hard as pool/labelled/test.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.data.imageset import ImageSet
from harness.data.importers import register_format
from harness.data.importers._bologna_catalog import find_catalog, norm_id, read_catalog
from harness.data.importers.quirks import (
    VAL_SHARE,
    Options,
    Quirks,
    Stack,
    fingerprint,
    majority,
    repair_nan,
    report,
    with_measurements,
)
from harness.data.splits import LABELLED_SHARE, labelled_test_from_known, target_splits, train_val
from harness.errors import BadInput

# Bologna ground-based images are KiDS-like; the challenge (Metcalf et al. 2019) used 0.2"/pixel.
BOLOGNA_PIXEL_SCALE = 0.2
SHAPE_SAMPLE = 32  # images read to decide the reference shape of a FITS set

BOLOGNA_BANDS = ("g", "r", "i")  # stacking order
BOLOGNA_BAND_DIRS = ("Band1", "Band2", "Band3")  # R, I, G in the challenge; files are matched by letter
# .fits, .fit, .fts, gzipped or fpack-compressed (.fz): every name astropy reads as FITS
FITS_NAME = re.compile(r"^imageSDSS_([A-Za-z])-(.+?)\.(fits|fit|fts)(\.gz|\.fz)?$", re.IGNORECASE)


@dataclass
class _BolognaPlan:
    """What one domain folder holds, checked before any pixel is read."""

    domain: str
    root: Path
    files: dict[str, dict[str, Path]]  # id -> band -> file
    catalog: pd.DataFrame  # columns renamed; `id` normalised; truth_is_lens numeric
    scanned: list[Path]
    catalog_bytes: bytes
    quirks: Quirks


def _scan_bologna_files(root: Path, quirks: Quirks) -> tuple[dict[str, dict[str, Path]], list[Path]]:
    """Index the FITS files of every Band* folder by ID and band letter (not by folder)."""
    files: dict[str, dict[str, Path]] = {}
    scanned: list[Path] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("band")):
        for f in sorted(d.iterdir()):
            if not f.is_file():
                continue
            scanned.append(f)
            if f.name.startswith("._"):
                quirks.add("junk")
                continue
            m = FITS_NAME.match(f.name)
            if not m:
                quirks.add("unrecognised", f.relative_to(root).as_posix())
                continue
            band, ident = m.group(1).lower(), norm_id(m.group(2))
            if band not in BOLOGNA_BANDS:
                quirks.add("other_band")
                continue
            if band in files.setdefault(ident, {}):
                quirks.add("duplicate_file", f.relative_to(root).as_posix())
                continue
            files[ident][band] = f
    return files, scanned


def _plan_bologna(path: Path, domain: str, where: str, opt: Options) -> _BolognaPlan:
    """Check folders and catalog of one domain and index its files; BadInput on structural faults."""
    root = path / domain
    if not root.is_dir():
        raise BadInput(f"{root}: missing (a Bologna copy holds easy/ and hard/)")
    for d in BOLOGNA_BAND_DIRS:
        if not (root / d).is_dir():
            raise BadInput(f"{root / d}: missing band folder (expected {', '.join(BOLOGNA_BAND_DIRS)})")
    quirks = Quirks(where)
    csv = find_catalog(path, domain)
    catalog = read_catalog(csv, quirks, opt)
    files, scanned = _scan_bologna_files(root, quirks)
    for b in BOLOGNA_BANDS:
        if not any(b in v for v in files.values()):
            raise BadInput(f"{root}: no {b.upper()}-band files (imageSDSS_{b.upper()}-<ID>.fits)")
    return _BolognaPlan(domain, root, files, catalog, scanned, csv.read_bytes(), quirks)


def _read_fits(f: Path) -> np.ndarray:
    """The first image HDU of a FITS file as a 2-D float32 array (leading unit axes squeezed)."""
    from astropy.io import fits  # imported here: only the Bologna importer needs astropy

    with fits.open(f, memmap=False) as hdus:
        for hdu in hdus:
            if getattr(hdu, "data", None) is not None and hdu.data.ndim >= 2:
                a = np.asarray(hdu.data, dtype=np.float32)
                while a.ndim > 2 and a.shape[0] == 1:
                    a = a[0]
                return a
    raise ValueError("no image data")


def _try_read_fits(f: Path) -> np.ndarray | None:
    """None for any unreadable file; astropy's per-file warnings are muted (the quirk is counted)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _read_fits(f)
    except Exception:  # noqa: BLE001 - corrupt files raise many types (OSError, TypeError, ValueError...)
        return None


def _reference_shape(plan: _BolognaPlan, ids: list[str]) -> tuple[int, int] | None:
    """Majority 2-D shape over the first SHAPE_SAMPLE readable g-band images."""
    shapes = []
    for i in ids:
        a = _try_read_fits(plan.files[i]["g"])
        if a is not None:
            shapes.append(a.shape)
        if len(shapes) >= SHAPE_SAMPLE:
            break
    return majority(shapes)


def _read_bologna_image(plan: _BolognaPlan, ident: str, shape: tuple, labelled: bool) -> np.ndarray | None:
    """Stack g, r, i of one ID; None (counted) if a band is unreadable or the shape is off."""
    bands = []
    for b in BOLOGNA_BANDS:
        f = plan.files[ident][b]
        a = _try_read_fits(f)
        if a is None:
            plan.quirks.add("unreadable", f.relative_to(plan.root).as_posix(), labelled)
            return None
        bands.append(a)
    if any(a.shape != shape for a in bands):
        plan.quirks.add("shape", ident, labelled)
        return None
    return repair_nan(np.stack(bands), plan.quirks, ident, labelled)


def _collect_bologna(plan: _BolognaPlan, scratch: Path, opt: Options) -> tuple[Stack, list[int]]:
    """Read every catalog row's image into a scratch stack; return it and the kept row positions."""
    cat, q = plan.catalog, plan.quirks
    labelled = (cat["truth_is_lens"] >= 0).to_numpy()
    candidates: list[int] = []
    for pos, ident in enumerate(cat["id"]):
        have = plan.files.get(ident)
        if have is None:
            q.add("no_image", labelled=bool(labelled[pos]))
        elif len(have) < len(BOLOGNA_BANDS):
            lacks = "".join(b for b in BOLOGNA_BANDS if b not in have)
            q.add("missing_band", f"{ident} lacks {lacks}", bool(labelled[pos]))
        else:
            candidates.append(pos)
    for ident in sorted(set(plan.files) - set(cat["id"])):
        q.add("no_row", ident)
    shape = _reference_shape(plan, [cat["id"].iloc[p] for p in candidates])
    if shape is None:
        raise BadInput(f"{plan.root}: no usable images (no readable FITS with g, r, i and a catalog row)")
    q.shape = "x".join(map(str, shape))
    stack = Stack(scratch / f"{plan.domain}.npy", len(candidates), (len(BOLOGNA_BANDS), *shape))
    kept = []
    for pos in tqdm(candidates, desc=q.where, unit="img", disable=not opt.progress):
        img = _read_bologna_image(plan, cat["id"].iloc[pos], shape, bool(labelled[pos]))
        if img is not None:
            stack.add(img)
            kept.append(pos)
    if not kept:
        raise BadInput(f"{plan.root}: no usable images (all were unreadable, mostly NaN or mis-shaped)")
    return stack, kept


def _bologna_splits(labels: np.ndarray, domain: str, opt: Options, where: Path) -> dict[str, np.ndarray]:
    """Split one domain: hard into pool/labelled/test, easy into a stratified train/val.

    Unlabelled easy rows, if any, form an easy pool.
    """
    known = np.flatnonzero(labels >= 0)
    if known.size == 0:
        raise BadInput(f"{where}: no labelled rows among the usable images")
    if domain == "hard" and known.size == labels.size:   # every row labelled: the protocol's 20% + a pool
        return target_splits(labels, LABELLED_SHARE, None, opt.test_share, opt.seed)
    if domain == "hard":
        return labelled_test_from_known(labels, opt.test_share, opt.seed)
    tv = train_val(labels[known], VAL_SHARE, opt.seed)
    splits = {k: known[v] for k, v in tv.items()}
    if known.size < labels.size:
        splits["pool"] = np.flatnonzero(labels < 0)
    return splits


@register_format("bologna", catalog=True)
def import_bologna(path: Path, name: str, scratch: Path, opt: Options) -> dict[str, ImageSet]:
    """Both domains are checked before either is read, so a structural fault costs no reading."""
    plans = [_plan_bologna(path, d, f"bologna/{d}", opt) for d in ("easy", "hard")]
    scale = opt.pixel_scale or BOLOGNA_PIXEL_SCALE
    sets: dict[str, ImageSet] = {}
    for plan in plans:
        stack, kept = _collect_bologna(plan, scratch, opt)
        images = stack.filled()
        catalog = plan.catalog.iloc[kept].reset_index(drop=True)
        labels = np.nan_to_num(catalog["truth_is_lens"].to_numpy(dtype=float), nan=-1).astype(np.int64)
        catalog = with_measurements(catalog, images, list(BOLOGNA_BANDS), scale)
        meta = {
            "name": f"{name}/{plan.domain}", "kind": "lens-finding", "domain": plan.domain,
            "bands": list(BOLOGNA_BANDS), "pixel_scale": scale, "classes": ["non-lens", "lens"],
            "source_format": "bologna", "source_path": str(path.resolve()),
            "fingerprint": fingerprint(path, plan.scanned, plan.catalog_bytes),
            "quirks": plan.quirks.as_meta(),
        }
        sets[plan.domain] = ImageSet(images=images, catalog=catalog, labels=labels, meta=meta,
                                     splits=_bologna_splits(labels, plan.domain, opt, plan.root))
        report(plan.quirks, opt.log)
        opt.log(f"{plan.quirks.where}: {len(labels)} images, {int((labels >= 0).sum())} labelled "
                f"({int((labels == 1).sum())} lenses)")
    return sets
