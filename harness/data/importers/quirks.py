"""Quirk accounting shared by every importer, plus the helpers several formats use.

Real copies are messy (macOS `._` files, corrupt files, NaN pixels, missing bands, catalog rows
without images). Such quirks never crash an import: the affected files are skipped, counted in a
`Quirks` and reported in one warning line per kind at the end, and labelled images that are lost are
always counted as such. The helpers below (scratch stack, NaN repair, measurements, fingerprint)
live here so that every format drops, repairs and describes images the same way.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.measure import measure

Log = Callable[[str], None]

ZEROPOINT = 27.0
VAL_SHARE = 0.2
NAN_REPAIR_MAX = 0.05  # repair (NaN -> 0) images with fewer non-finite pixels than this; drop the rest
MEASURE_CHUNK = 1024

# kind -> (message template, whether it drops images so labelled losses must be stated)
QUIRK_TEXT: dict[str, tuple[str, bool]] = {
    "junk": ("skipped {n} macOS '._' file(s)", False),
    "unrecognised": ("ignored {n} file(s) with unrecognised names", False),
    "other_band": ("ignored {n} FITS file(s) of bands other than g, r, i", False),
    "duplicate_file": ("ignored {n} duplicate file(s) for the same ID and band", False),
    "unreadable": ("skipped {n} unreadable file(s); their images were dropped", True),
    "nan_repaired": ("repaired {n} image(s) with a few NaN pixels (set to 0)", False),
    "mostly_nan": ("dropped {n} image(s) with >= {pct}% NaN pixels", True),
    "missing_band": ("dropped {n} image(s) missing a band", True),
    "shape": ("dropped {n} image(s) whose shape differs from {shape}", True),
    "no_image": ("{n} catalog row(s) have no image", True),
    "no_row": ("dropped {n} image(s) with no catalog row (so no label)", False),
    "duplicate_id": (("dropped {n} duplicate catalog row(s) that repeat an ID with the same label "
                     "(kept the first of each)"), False),
    "no_id": ("dropped {n} catalog row(s) with an empty ID", True),
}


@dataclass
class Options:
    """The caller's choices that every format needs (seed, test share, progress bars, log, scale)."""

    seed: int
    test_share: float
    progress: bool
    log: Log
    pixel_scale: float | None
    catalog_columns: tuple[str, ...] = ()   # catalog columns that are observables (model inputs)
    allow_columns: tuple[str, ...] = ()     # of those, the ones the leak guard lets through


@dataclass
class Quirks:
    """Counts of the quirks met while importing one set, reported once per kind at the end."""

    where: str
    counts: Counter = field(default_factory=Counter)
    labelled: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    shape: str = ""
    nan_max: float = NAN_REPAIR_MAX   # a format whose stamps have NaN edges by nature repairs more

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
            line = f"warning: {self.where}: " + self._text(kind)
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

    def dropped(self) -> str:
        """The drops in one line, for an error raised before the warnings are reported ("" if none)."""
        return "; ".join(self._text(k) for k, (_, drops) in QUIRK_TEXT.items() if drops and self.counts[k])

    def _text(self, kind: str) -> str:
        pct = f"{100 * self.nan_max:g}"
        return QUIRK_TEXT[kind][0].format(n=self.counts[kind], shape=self.shape, pct=pct)

    def as_meta(self) -> dict:
        return {k: int(v) for k, v in self.counts.items() if v}


def report(quirks: Quirks, log: Log) -> None:
    """Send the quirk warnings of one set to `log`, one line each."""
    for line in quirks.lines():
        log(line)


class Stack:
    """A scratch memory-mapped (capacity, C, H, W) float32 array filled image by image.

    Large sets are stacked into such a file inside the temporary output folder, so an import of
    ~100k Bologna images does not need the whole array in RAM.
    """

    def __init__(self, file: Path, capacity: int, shape: tuple[int, int, int]):
        self.array = np.lib.format.open_memmap(file, mode="w+", dtype=np.float32,
                                               shape=(max(capacity, 1), *shape))
        self.n = 0

    def add(self, image: np.ndarray) -> None:
        self.array[self.n] = image
        self.n += 1

    def filled(self) -> np.ndarray:
        return self.array[: self.n]


def repair_nan(image: np.ndarray, quirks: Quirks, name: str, labelled: bool) -> np.ndarray | None:
    """NaN/inf -> 0 when rare (counted); None (counted as a drop) when they are >= `quirks.nan_max`."""
    bad = ~np.isfinite(image)
    nbad = int(bad.sum())
    if nbad == 0:
        return image
    if nbad >= quirks.nan_max * image.size:
        quirks.add("mostly_nan", name, labelled)
        return None
    quirks.add("nan_repaired")
    return np.where(bad, np.float32(0), image)


def majority(shapes: Iterable[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The most common shape (ties: the first met), None if there is none."""
    counts = Counter(shapes)
    return counts.most_common(1)[0][0] if counts else None


def _measure(images: np.ndarray, bands: list[str], pixel_scale: float) -> pd.DataFrame:
    """measure() in chunks, because it works in float64 and real sets can be large."""
    parts = [measure(images[i:i + MEASURE_CHUNK], bands, pixel_scale, ZEROPOINT)
             for i in range(0, len(images), MEASURE_CHUNK)]
    return pd.concat(parts, ignore_index=True)


def with_measurements(catalog: pd.DataFrame, images: np.ndarray, bands: list[str],
                      pixel_scale: float) -> pd.DataFrame:
    """Append the pixel-measured observables; a clashing source column is kept as `csv_<name>`."""
    measured = _measure(images, bands, pixel_scale)
    catalog = catalog.reset_index(drop=True)
    catalog = catalog.rename(columns={c: f"csv_{c}" for c in catalog.columns if c in measured.columns})
    return pd.concat([catalog, measured], axis=1)


def fingerprint(root: Path, files: Iterable[Path], extra: bytes = b"") -> str:
    """sha256 of the sorted (relative path, size, content sha256) list plus `extra` (catalog bytes).

    The content is in it so that two imports whose files share names and sizes (a survey's cutouts
    reprocessed, say) are told apart: cached stages and the same-set check key on this fingerprint."""
    h = hashlib.sha256()
    for rel, f in sorted((f.relative_to(root).as_posix(), f) for f in files):
        try:
            with open(f, "rb") as fh:
                content = hashlib.file_digest(fh, "sha256").hexdigest()
            size = f.stat().st_size
        except OSError:   # the importer reports an unreadable file as a quirk; it still counts here
            content, size = "unreadable", -1
        h.update(f"{rel}\t{size}\t{content}\n".encode())
    h.update(extra)
    return h.hexdigest()


def is_junk(p: Path) -> bool:
    """macOS resource forks (`._name`) and anything under a `__MACOSX` folder."""
    return p.name.startswith("._") or "__MACOSX" in p.parts
