"""Importers: turn real data layouts into the harness's ImageSet folders.

Formats:
    bologna        Bologna Lens Finding Challenge layout (DeepLense Specific Test II): easy/ and hard/,
                   Band1..3 FITS per ID, a catalog CSV per domain; hard is ~80% unlabelled.
    deeplense-npy  class folders of .npy images (DeepLense Common Test I, substructure classes).
    hst-npy        flat `*_hst.npy` lenses and `nl_*_hst.npy` non-lenses (DeepLense Specific Test VI).

Real copies are messy (macOS `._` files, corrupt files, NaN pixels, missing bands, catalog rows
without images). Such quirks never crash an import: the affected files are skipped, counted and
reported in one warning line per kind at the end, and labelled images that are lost are always
counted as such. Anything that makes the whole import meaningless (missing folder, catalog or
column; no usable image) is a BadInput naming the path, and nothing is written.

Large sets are stacked into a scratch memory-mapped array inside the temporary output folder, so
an import of ~100k Bologna images does not need the whole array in RAM.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.data.imageset import ImageSet, save
from harness.data.measure import measure
from harness.data.splits import labelled_test_from_known, train_val
from harness.errors import BadInput
from harness.fs import atomic_dir

Log = Callable[[str], None]

FORMATS = ("bologna", "deeplense-npy", "hst-npy")

# Bologna ground-based images are KiDS-like; the challenge (Metcalf et al. 2019) used 0.2"/pixel.
BOLOGNA_PIXEL_SCALE = 0.2
# Nominal scales for the .npy sets, which carry no header: used only for the aperture of measure().
DEEPLENSE_PIXEL_SCALE = 0.05
HST_PIXEL_SCALE = 0.05  # ACS/WFC drizzled scale; an assumption, the files do not say
ZEROPOINT = 27.0

VAL_SHARE = 0.2
NAN_REPAIR_MAX = 0.05  # repair (NaN -> 0) images with fewer non-finite pixels than this; drop the rest
SHAPE_SAMPLE = 32  # images read to decide the reference shape of a FITS set
MEASURE_CHUNK = 1024

BOLOGNA_BANDS = ("g", "r", "i")  # stacking order
BOLOGNA_BAND_DIRS = ("Band1", "Band2", "Band3")  # R, I, G in the challenge; files are matched by letter
BOLOGNA_CATALOGS = {"easy": ("easy_test.csv",), "hard": ("hard_test_cut.csv", "hard_test.csv")}
BOLOGNA_TRUTH = ("is_lens", "einstein_area", "numb_pix_lensed_image", "flux_lensed_image_in_sigma")
FITS_NAME = re.compile(r"^imageSDSS_([A-Za-z])-(.+?)\.fits(\.gz)?$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- quirks

# kind -> (message template, whether it drops images so labelled losses must be stated)
QUIRK_TEXT: dict[str, tuple[str, bool]] = {
    "junk": ("skipped {n} macOS '._' file(s)", False),
    "unrecognised": ("ignored {n} file(s) with unrecognised names", False),
    "other_band": ("ignored {n} FITS file(s) of bands other than g, r, i", False),
    "duplicate_file": ("ignored {n} duplicate file(s) for the same ID and band", False),
    "unreadable": ("skipped {n} unreadable file(s); their images were dropped", True),
    "nan_repaired": ("repaired {n} image(s) with a few NaN pixels (set to 0)", False),
    "mostly_nan": ("dropped {n} image(s) with >= 5% NaN pixels", True),
    "missing_band": ("dropped {n} image(s) missing a band", True),
    "shape": ("dropped {n} image(s) whose shape differs from {shape}", True),
    "no_image": ("{n} catalog row(s) have no image", True),
    "no_row": ("dropped {n} image(s) with no catalog row (so no label)", False),
    "duplicate_id": ("dropped {n} duplicate catalog row(s) (kept the first of each ID)", True),
    "no_id": ("dropped {n} catalog row(s) with an empty ID", True),
}


@dataclass
class Quirks:
    """Counts of the quirks met while importing one set, reported once per kind at the end."""

    where: str
    counts: Counter = field(default_factory=Counter)
    labelled: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    shape: str = ""

    def add(self, kind: str, example: str | None = None, labelled: bool = False) -> None:
        self.counts[kind] += 1
        self.labelled[kind] += int(labelled)
        if example is not None:
            self.examples.setdefault(kind, []).append(example.replace("\n", " "))

    def lines(self) -> list[str]:
        """One warning per quirk kind, plus a total of labelled images lost if there were any."""
        out = []
        for kind, (text, drops) in QUIRK_TEXT.items():
            n = self.counts[kind]
            if not n:
                continue
            line = f"warning: {self.where}: " + text.format(n=n, shape=self.shape)
            ex = self.examples.get(kind, [])
            if ex:
                line += " (" + ", ".join(ex[:3]) + (", ..." if len(ex) > 3 else "") + ")"
            if drops:
                line += f"; {self.labelled[kind]} of them labelled"
            out.append(line)
        lost = sum(self.labelled[k] for k, (_, drops) in QUIRK_TEXT.items() if drops)
        if lost:
            out.append(f"warning: {self.where}: {lost} labelled image(s) lost in total")
        return out

    def as_meta(self) -> dict:
        return {k: int(v) for k, v in self.counts.items() if v}


# ----------------------------------------------------------------------------------------- public API


@dataclass
class _Options:
    seed: int
    test_share: float
    progress: bool
    log: Log
    pixel_scale: float | None


def import_dataset(fmt: str, path: Path, name: str, datasets_dir: Path = Path("datasets"), seed: int = 0,
                   test_share: float = 0.5, progress: bool = True, log: Log = print,
                   pixel_scale: float | None = None) -> Path:
    """Import a real data layout into `datasets_dir/name`, atomically; return that folder.

    `fmt` is one of FORMATS. `test_share` is the share of the labelled hard rows held out as `test`
    (the rest are `labelled`). `pixel_scale` overrides the format's nominal arcsec/pixel. Quirks are
    reported through `log`, one line per kind; on any BadInput nothing is written.
    """
    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt}: unknown format (choose from {', '.join(FORMATS)})")
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: not a folder")
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise BadInput(f"--name {name!r}: must be a plain folder name")
    if not 0 < test_share < 1:
        raise BadInput(f"test share {test_share}: must be in (0, 1)")
    out = Path(datasets_dir) / name
    if out.exists():
        raise BadInput(f"{out}: already exists (remove it or choose another --name)")
    opt = _Options(seed, test_share, progress, log, pixel_scale)
    importer = {"bologna": _import_bologna, "deeplense-npy": _import_deeplense, "hst-npy": _import_hst}[fmt]
    made_parent = not out.parent.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.scratch-", dir=out.parent))
    except OSError as e:
        raise BadInput(f"{out}: cannot write there ({e.strerror or e})") from None
    ok = False
    try:
        sets = importer(path, name, scratch, opt)
        _save_all(sets, out)
        ok = True
    finally:
        sets = None
        shutil.rmtree(scratch, ignore_errors=True)
        if not ok and made_parent:
            _remove_if_empty(out.parent)
    log(f"imported {fmt} {path} -> {out}")
    return out


def _save_all(sets: dict[str, ImageSet], out: Path) -> None:
    """One set is written as `out` itself; several as `out/<key>/`, all renamed into place at once."""
    if list(sets) == [""]:
        save(sets[""], out)
        return
    with atomic_dir(out) as tmp:
        for key, iset in sets.items():
            save(iset, tmp / key)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# ------------------------------------------------------------------------------------- shared helpers


class _Stack:
    """A scratch memory-mapped (capacity, C, H, W) float32 array filled image by image."""

    def __init__(self, file: Path, capacity: int, shape: tuple[int, int, int]):
        self.array = np.lib.format.open_memmap(file, mode="w+", dtype=np.float32,
                                               shape=(max(capacity, 1), *shape))
        self.n = 0

    def add(self, image: np.ndarray) -> None:
        self.array[self.n] = image
        self.n += 1

    def filled(self) -> np.ndarray:
        return self.array[: self.n]


def _repair_nan(image: np.ndarray, quirks: Quirks, name: str, labelled: bool) -> np.ndarray | None:
    """NaN/inf -> 0 when rare (counted); None (counted as a drop) when they are >= NAN_REPAIR_MAX."""
    bad = ~np.isfinite(image)
    nbad = int(bad.sum())
    if nbad == 0:
        return image
    if nbad >= NAN_REPAIR_MAX * image.size:
        quirks.add("mostly_nan", name, labelled)
        return None
    quirks.add("nan_repaired")
    return np.where(bad, np.float32(0), image)


def _majority(shapes: Iterable[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The most common shape (ties: the first met), None if there is none."""
    counts = Counter(shapes)
    return counts.most_common(1)[0][0] if counts else None


def _measure(images: np.ndarray, bands: list[str], pixel_scale: float) -> pd.DataFrame:
    """measure() in chunks, because it works in float64 and real sets can be large."""
    parts = [measure(images[i:i + MEASURE_CHUNK], bands, pixel_scale, ZEROPOINT)
             for i in range(0, len(images), MEASURE_CHUNK)]
    return pd.concat(parts, ignore_index=True)


def _with_measurements(catalog: pd.DataFrame, images: np.ndarray, bands: list[str],
                       pixel_scale: float) -> pd.DataFrame:
    """Append the pixel-measured observables; a clashing source column is kept as `csv_<name>`."""
    measured = _measure(images, bands, pixel_scale)
    catalog = catalog.reset_index(drop=True)
    catalog = catalog.rename(columns={c: f"csv_{c}" for c in catalog.columns if c in measured.columns})
    return pd.concat([catalog, measured], axis=1)


def _fingerprint(root: Path, files: Iterable[Path], extra: bytes = b"") -> str:
    """sha256 of the sorted (relative path, size) list plus `extra` (catalog bytes)."""
    h = hashlib.sha256()
    for rel, size in sorted((f.relative_to(root).as_posix(), f.stat().st_size) for f in files):
        h.update(f"{rel}\t{size}\n".encode())
    h.update(extra)
    return h.hexdigest()


def _is_junk(p: Path) -> bool:
    return p.name.startswith("._") or "__MACOSX" in p.parts


def _report(quirks: Quirks, log: Log) -> None:
    for line in quirks.lines():
        log(line)


# -------------------------------------------------------------------------------------------- bologna


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


def _norm_id(v: object) -> str:
    """IDs as text, so '00123', '123' and 123.0 (pandas' float for a column with gaps) all match."""
    s = str(v).strip()
    if re.fullmatch(r"\d+(\.0*)?", s):
        s = s.split(".")[0].lstrip("0") or "0"
    return s


def _find_catalog(path: Path, domain: str) -> Path:
    names = BOLOGNA_CATALOGS[domain]
    for folder in (path, path / domain):
        for n in names:
            if (folder / n).is_file():
                return folder / n
    raise BadInput(f"{path}: no {domain} catalog {' or '.join(names)} (looked in {path} and {path / domain})")


def _read_bologna_catalog(csv: Path, quirks: Quirks) -> pd.DataFrame:
    """Read a challenge CSV: `id`, truth columns renamed `truth_*`, other columns kept as they are."""
    try:
        cat = pd.read_csv(csv, dtype={"ID": str})
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BadInput(f"{csv}: unreadable catalog ({str(e).splitlines()[0] if str(e) else e!r})") from None
    cat.columns = [str(c).strip() for c in cat.columns]
    lower = {c.lower(): c for c in cat.columns}
    missing = [c for c in ("id", "is_lens") if c not in lower]
    if missing:
        raise BadInput(f"{csv}: catalog lacks column(s) {', '.join(missing)} (has: {', '.join(cat.columns)})")
    rename = {lower["id"]: "id"}
    rename.update({lower[t]: f"truth_{t}" for t in BOLOGNA_TRUTH if t in lower})
    cat = cat.rename(columns=rename)
    cat["truth_is_lens"] = _labels_column(cat["truth_is_lens"], csv)
    ids = cat["id"].map(lambda v: "" if pd.isna(v) else _norm_id(v))
    for i in np.flatnonzero(ids.to_numpy() == ""):
        quirks.add("no_id", labelled=bool(cat["truth_is_lens"].iloc[i] >= 0))
    cat["id"] = ids
    cat = cat[ids != ""]
    dup = cat["id"].duplicated()
    for lab in cat.loc[dup, "truth_is_lens"]:
        quirks.add("duplicate_id", labelled=bool(lab >= 0))
    return cat[~dup].reset_index(drop=True)


def _labels_column(col: pd.Series, csv: Path) -> pd.Series:
    """is_lens as float: 0/1 labelled, NaN (empty or negative) unlabelled; anything else is BadInput."""
    if col.dtype == bool:
        col = col.astype(float)
    values = pd.to_numeric(col, errors="coerce")
    bad = col.notna() & (values.isna() | ~(values.isin([0, 1]) | (values < 0)))
    if bad.any():
        raise BadInput(f"{csv}: is_lens holds '{col[bad].iloc[0]}'; expected 0, 1 or empty")
    return values.where(values >= 0)


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
            band, ident = m.group(1).lower(), _norm_id(m.group(2))
            if band not in BOLOGNA_BANDS:
                quirks.add("other_band")
                continue
            if band in files.setdefault(ident, {}):
                quirks.add("duplicate_file", f.relative_to(root).as_posix())
                continue
            files[ident][band] = f
    return files, scanned


def _plan_bologna(path: Path, domain: str, where: str) -> _BolognaPlan:
    """Check folders and catalog of one domain and index its files; BadInput on structural faults."""
    root = path / domain
    if not root.is_dir():
        raise BadInput(f"{root}: missing (a Bologna copy holds easy/ and hard/)")
    for d in BOLOGNA_BAND_DIRS:
        if not (root / d).is_dir():
            raise BadInput(f"{root / d}: missing band folder (expected {', '.join(BOLOGNA_BAND_DIRS)})")
    quirks = Quirks(where)
    csv = _find_catalog(path, domain)
    catalog = _read_bologna_catalog(csv, quirks)
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
    return _majority(shapes)


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
    return _repair_nan(np.stack(bands), plan.quirks, ident, labelled)


def _collect_bologna(plan: _BolognaPlan, scratch: Path, opt: _Options) -> tuple[_Stack, list[int]]:
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
    stack = _Stack(scratch / f"{plan.domain}.npy", len(candidates), (len(BOLOGNA_BANDS), *shape))
    kept = []
    for pos in tqdm(candidates, desc=q.where, unit="img", disable=not opt.progress):
        img = _read_bologna_image(plan, cat["id"].iloc[pos], shape, bool(labelled[pos]))
        if img is not None:
            stack.add(img)
            kept.append(pos)
    if not kept:
        raise BadInput(f"{plan.root}: no usable images (all were unreadable, mostly NaN or mis-shaped)")
    return stack, kept


def _bologna_splits(labels: np.ndarray, domain: str, opt: _Options, where: Path) -> dict[str, np.ndarray]:
    """easy: stratified train/val of the labelled rows (+ pool if some are unlabelled); hard: pool/labelled/test."""
    known = np.flatnonzero(labels >= 0)
    if known.size == 0:
        raise BadInput(f"{where}: no labelled rows among the usable images")
    if domain == "hard":
        return labelled_test_from_known(labels, opt.test_share, opt.seed)
    tv = train_val(labels[known], VAL_SHARE, opt.seed)
    splits = {k: known[v] for k, v in tv.items()}
    if known.size < labels.size:
        splits["pool"] = np.flatnonzero(labels < 0)
    return splits


def _import_bologna(path: Path, name: str, scratch: Path, opt: _Options) -> dict[str, ImageSet]:
    """Both domains are checked before either is read, so a structural fault costs no reading."""
    plans = [_plan_bologna(path, d, f"bologna/{d}") for d in ("easy", "hard")]
    scale = opt.pixel_scale or BOLOGNA_PIXEL_SCALE
    sets: dict[str, ImageSet] = {}
    for plan in plans:
        stack, kept = _collect_bologna(plan, scratch, opt)
        images = stack.filled()
        catalog = plan.catalog.iloc[kept].reset_index(drop=True)
        labels = np.nan_to_num(catalog["truth_is_lens"].to_numpy(dtype=float), nan=-1).astype(np.int64)
        catalog = _with_measurements(catalog, images, list(BOLOGNA_BANDS), scale)
        meta = {
            "name": f"{name}/{plan.domain}", "kind": "lens-finding", "domain": plan.domain,
            "bands": list(BOLOGNA_BANDS), "pixel_scale": scale, "classes": ["non-lens", "lens"],
            "source_format": "bologna", "source_path": str(path.resolve()),
            "fingerprint": _fingerprint(path, plan.scanned, plan.catalog_bytes),
            "quirks": plan.quirks.as_meta(),
        }
        sets[plan.domain] = ImageSet(images=images, catalog=catalog, labels=labels, meta=meta,
                                     splits=_bologna_splits(labels, plan.domain, opt, plan.root))
        _report(plan.quirks, opt.log)
        opt.log(f"{plan.quirks.where}: {len(labels)} images, {int((labels >= 0).sum())} labelled "
                f"({int((labels == 1).sum())} lenses)")
    return sets


# -------------------------------------------------------------------------------------- .npy formats


@dataclass
class _NpyItem:
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


def _stack_npy(items: list[_NpyItem], root: Path, scratch: Path, quirks: Quirks,
               opt: _Options) -> tuple[_Stack, list[int]]:
    """Stack the items of the most common (C, H, W) shape; others are skipped and counted."""
    shapes = []
    for it in items:
        s = _npy_shape(it.file)
        shapes.append(s)
        if s is None:
            quirks.add("unreadable", it.rel, True)
    shape = _majority(s for s in shapes if s is not None)
    if shape is None:
        raise BadInput(f"{root}: no readable .npy images")
    quirks.shape = "x".join(map(str, shape))
    ok = []
    for i, s in enumerate(shapes):
        if s is not None and s != shape:
            quirks.add("shape", items[i].rel, True)
        elif s is not None:
            ok.append(i)
    stack = _Stack(scratch / "images.npy", len(ok), shape)
    kept = []
    for i in tqdm(ok, desc=quirks.where, unit="img", disable=not opt.progress):
        img = _load_npy(items[i], shape, quirks)
        if img is not None:
            stack.add(img)
            kept.append(i)
    if not kept:
        raise BadInput(f"{root}: no usable .npy images")
    return stack, kept


def _load_npy(it: _NpyItem, shape: tuple, quirks: Quirks) -> np.ndarray | None:
    try:
        a = np.load(it.file, allow_pickle=False).astype(np.float32).reshape(shape)
    except Exception:  # noqa: BLE001 - the header was fine but the body may be truncated
        quirks.add("unreadable", it.rel, True)
        return None
    return _repair_nan(a, quirks, it.rel, True)


def _npy_imageset(items: list[_NpyItem], kept: list[int], images: np.ndarray, splits: dict,
                  meta: dict, pixel_scale: float) -> ImageSet:
    labels = np.array([items[i].label for i in kept], dtype=np.int64)
    bands = ["x"] if images.shape[1] == 1 else [f"c{k}" for k in range(images.shape[1])]
    catalog = _with_measurements(pd.DataFrame({"id": [items[i].rel for i in kept]}), images, bands, pixel_scale)
    meta = {**meta, "bands": bands, "pixel_scale": pixel_scale}
    return ImageSet(images=images, catalog=catalog, labels=labels, splits=splits, meta=meta)


def _npy_files(folder: Path, quirks: Quirks, root: Path) -> list[Path]:
    """The .npy files under `folder`, macOS junk skipped and counted."""
    out = []
    for f in sorted(folder.rglob("*.npy")):
        if _is_junk(f.relative_to(root)):
            quirks.add("junk")
        elif f.is_file():
            out.append(f)
    return out


def _descend_wrappers(path: Path) -> Path:
    """Unzipped copies often add a wrapper folder (`dataset/`); step into lone subfolders."""
    while True:
        subs = _class_dirs(path)
        if len(subs) == 1 and not any(path.glob("*.npy")) and subs[0].name not in ("train", "val", "test"):
            inner = [p for p in subs[0].iterdir() if p.is_dir()]
            if inner:
                path = subs[0]
                continue
        return path


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _import_deeplense(path: Path, name: str, scratch: Path, opt: _Options) -> dict[str, ImageSet]:
    """Class folders (optionally under train/ val/ [test/]); classes sorted by folder name."""
    root = _descend_wrappers(path)
    groups = [g for g in ("train", "val", "test") if (root / g).is_dir()]
    if groups and "train" not in groups:
        raise BadInput(f"{root}: has {', '.join(groups)}/ but no train/")
    group_dirs = {g: root / g for g in groups} if groups else {"": root}
    classes = sorted({d.name for gd in group_dirs.values() for d in _class_dirs(gd)})
    if not classes:
        raise BadInput(f"{root}: no class folders (expected e.g. no/, sphere/, vort/)")
    quirks = Quirks("deeplense-npy")
    items, scanned = [], []
    for g, gd in group_dirs.items():
        for d in _class_dirs(gd):
            files = _npy_files(d, quirks, root)
            scanned += files
            items += [_NpyItem(f, f.relative_to(root).as_posix(), classes.index(d.name), g) for f in files]
    if not items:
        raise BadInput(f"{root}: no .npy images in the class folders ({', '.join(classes)})")
    stack, kept = _stack_npy(items, root, scratch, quirks, opt)
    splits = _group_splits([items[i].group for i in kept], np.array([items[i].label for i in kept]), opt)
    meta = {"name": name, "kind": "substructure", "domain": "real", "classes": classes,
            "source_format": "deeplense-npy", "source_path": str(path.resolve()),
            "fingerprint": _fingerprint(root, scanned), "quirks": quirks.as_meta()}
    scale = opt.pixel_scale or DEEPLENSE_PIXEL_SCALE
    iset = _npy_imageset(items, kept, stack.filled(), splits, meta, scale)
    _report(quirks, opt.log)
    opt.log(f"deeplense-npy: {len(kept)} images in {len(classes)} classes ({', '.join(classes)})")
    return {"": iset}


def _group_splits(groups: list[str], labels: np.ndarray, opt: _Options) -> dict[str, np.ndarray]:
    """train/val(/test) from the folders when present, else a stratified train/val of VAL_SHARE."""
    if not any(groups):
        return train_val(labels, VAL_SHARE, opt.seed)
    g = np.array(groups)
    splits = {k: np.flatnonzero(g == k).astype(np.int64) for k in ("train", "val", "test") if (g == k).any()}
    if "val" not in splits:  # only train/ survived: carve val out of it
        tv = train_val(labels[splits["train"]], VAL_SHARE, opt.seed)
        splits.update({k: splits["train"][v] for k, v in tv.items()})
    return splits


def _import_hst(path: Path, name: str, scratch: Path, opt: _Options) -> dict[str, ImageSet]:
    """`*_hst.npy` are lenses, `nl_*_hst.npy` non-lenses; other .npy files are ignored and counted."""
    quirks = Quirks("hst-npy")
    files = _npy_files(path, quirks, path)
    items = []
    for f in files:
        if not f.name.endswith("_hst.npy"):
            quirks.add("unrecognised", f.relative_to(path).as_posix())
            continue
        items.append(_NpyItem(f, f.relative_to(path).as_posix(), 0 if f.name.startswith("nl_") else 1))
    if not items:
        raise BadInput(f"{path}: no *_hst.npy files")
    stack, kept = _stack_npy(items, path, scratch, quirks, opt)
    labels = np.array([items[i].label for i in kept], dtype=np.int64)
    meta = {"name": name, "kind": "lens-finding", "domain": "real", "classes": ["non-lens", "lens"],
            "source_format": "hst-npy", "source_path": str(path.resolve()),
            "fingerprint": _fingerprint(path, files), "quirks": quirks.as_meta()}
    iset = _npy_imageset(items, kept, stack.filled(), train_val(labels, VAL_SHARE, opt.seed), meta,
                         opt.pixel_scale or HST_PIXEL_SCALE)
    _report(quirks, opt.log)
    opt.log(f"hst-npy: {len(kept)} images ({int(labels.sum())} lenses, {int((labels == 0).sum())} non-lenses)")
    return {"": iset}
