"""Importers: turn real data layouts into the harness's ImageSet folders.

Formats (one module each in this package, found by importing its modules):
    bologna        Bologna Lens Finding Challenge layout (DeepLense Specific Test II): easy/ and hard/,
                   Band1..3 FITS per ID, a catalog CSV per domain; hard is ~80% unlabelled.
    deeplense-npy  class folders of .npy images (DeepLense Common Test I, substructure classes).
    hst-npy        flat `*_hst.npy` lenses and `nl_*_hst.npy` non-lenses (DeepLense Specific Test VI).
    cutouts-npy    unlabelled survey stamps, one .npy per file, for `score` only (no training splits).

A new format is one module here whose reader is decorated with `@register_format("name")`; it
takes (source path, set name, scratch folder, Options) and returns {key: ImageSet}, one key "" for
a single set or one key per sub-set. Quirks of real copies are counted and reported, never fatal
(see `quirks.py`). Anything that makes the whole import meaningless (missing folder, catalog or
column; no usable image) is a BadInput naming the path, and nothing is written.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.data.imageset import ImageSet, save
from harness.data.importers.quirks import Log, Options
from harness.errors import BadInput
from harness.fs import atomic_dir

Reader = Callable[[Path, str, Path, Options], dict[str, ImageSet]]

# format name -> reader; filled by @register_format when the modules of this package are imported
FORMATS: dict[str, Reader] = {}
WITH_CATALOG: set[str] = set()   # formats whose layout carries a catalog (so --catalog-columns applies)
_discovered = False


def register_format(name: str, catalog: bool = False) -> Callable[[Reader], Reader]:
    """Decorator: make `reader` the importer of `--format name` (`catalog`: its layout has a catalog)."""

    def deco(reader: Reader) -> Reader:
        if name in FORMATS and FORMATS[name] is not reader:
            raise ValueError(f"import format '{name}' registered twice")
        FORMATS[name] = reader
        if catalog:
            WITH_CATALOG.add(name)
        return reader

    return deco


def _discover() -> None:
    """Import every module of this package once, so that each registers its format."""
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def format_names() -> list[str]:
    """The known formats, sorted (the choices of `data import --format`)."""
    _discover()
    return sorted(FORMATS)


def import_dataset(fmt: str, path: Path, name: str, datasets_dir: Path = Path("datasets"), seed: int = 0,
                   test_share: float = 0.5, progress: bool = True, log: Log = print,
                   pixel_scale: float | None = None, catalog_columns: tuple[str, ...] = (),
                   allow_columns: tuple[str, ...] = ()) -> Path:
    """Import a real data layout into `datasets_dir/name`, atomically; return that folder.

    `fmt` is one of `format_names()`. `test_share` is the share of the labelled hard rows held out
    as `test` (the rest are `labelled`). `pixel_scale` overrides the format's nominal arcsec/pixel.
    `catalog_columns` are the catalog's observables (the allow-list of model inputs; any other catalog
    column is kept as `truth_<name>`); `allow_columns` of them pass the leak guard regardless.
    Quirks are reported through `log`, one line per kind; on any BadInput nothing is written.
    """
    known = format_names()
    if fmt not in known:
        raise BadInput(f"--format {fmt}: unknown format (choose from {', '.join(known)})")
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
    if catalog_columns and fmt not in WITH_CATALOG:
        raise BadInput(f"--catalog-columns: the {fmt} layout has no catalog")
    stray = sorted(set(allow_columns) - set(catalog_columns))
    if stray:
        raise BadInput(f"--allow-column {stray[0]}: not among --catalog-columns "
                       f"({', '.join(catalog_columns) or 'none given'})")
    opt = Options(seed, test_share, progress, log, pixel_scale, tuple(catalog_columns), tuple(allow_columns))
    reader = FORMATS[fmt]
    made_parent = not out.parent.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.scratch-", dir=out.parent))
    except OSError as e:
        raise BadInput(f"{out}: cannot write there ({e.strerror or e})") from None
    ok = False
    try:
        sets = reader(path, name, scratch, opt)
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
