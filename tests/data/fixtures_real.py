"""Small synthetic copies of the real data layouts the importers read, with the quirks real copies have.

Each band gets a distinct constant offset (g=100, r=200, i=300) so a test can check the stacking order.
Pixel noise is independent of the label, so no measured column separates the classes by design.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

BAND_DIR = {"r": "Band1", "i": "Band2", "g": "Band3"}  # the challenge's folder for each band letter
OFFSET = {"g": 100.0, "r": 200.0, "i": 300.0}
SIZE = 101

# Hard-domain quirks, by ID (see make_bologna)
HARD_LABELLED = {101: 1, 102: 0, 103: 1, 104: 0, 108: 1, 109: 0}  # the other 14 rows are unlabelled (70%)
HARD_CORRUPT = 103  # its I-band FITS is garbage (a labelled image lost)
HARD_FEW_NAN = 105  # a few NaN pixels: repaired
HARD_MOSTLY_NAN = 106  # g and r all NaN: dropped
HARD_NO_R = 107  # no R-band file: dropped
HARD_NO_IMAGE = 199  # catalog row (labelled) without any file
HARD_NO_ROW = 150  # files without a catalog row


def _image(rng: np.random.Generator, band: str) -> np.ndarray:
    return (OFFSET[band] + rng.normal(0, 1, (SIZE, SIZE))).astype(np.float32)


def write_fits(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data).writeto(path)


def _write_id(root: Path, ident: int, rng: np.random.Generator, skip: str = "", nan: str = "") -> None:
    for band, folder in BAND_DIR.items():
        if band == skip:
            continue
        img = _image(rng, band)
        if nan == "few" and band == "g":
            img[0, :10] = np.nan
        if nan == "most" and band in "gr":
            img[:] = np.nan
        write_fits(root / folder / f"imageSDSS_{band.upper()}-{ident}.fits", img)


def _csv(rows: list[tuple[int, str]]) -> str:
    head = "ID,is_lens,Einstein_area,numb_pix_lensed_image,flux_lensed_image_in_sigma,leaky_col\n"
    return head + "".join(f"{i},{lab},{0.5 + i % 3},{10 + i % 7},{3.0 + i % 5},{lab}\n" for i, lab in rows)


def make_bologna(root: Path, seed: int = 0) -> Path:
    """12 easy IDs (all labelled, 6 lenses) and 20 hard IDs (6 labelled; 5 usable, so that the test split
    holds both classes) plus the quirks named above.

    The easy catalog sits in PATH, the hard one in PATH/hard (both places are accepted).
    """
    rng = np.random.default_rng(seed)
    easy = root / "easy"
    for ident in range(1, 13):
        _write_id(easy, ident, rng)
    (easy / "Band1" / "._imageSDSS_R-1.fits").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (root / "easy_test.csv").write_text(_csv([(i, str(i % 2)) for i in range(1, 13)]))

    hard = root / "hard"
    ids = list(range(101, 121))
    for ident in ids + [HARD_NO_ROW]:
        skip = "r" if ident == HARD_NO_R else ""
        nan = {HARD_FEW_NAN: "few", HARD_MOSTLY_NAN: "most"}.get(ident, "")
        _write_id(hard, ident, rng, skip=skip, nan=nan)
    (hard / "Band2" / f"imageSDSS_I-{HARD_CORRUPT}.fits").write_bytes(b"this is not a FITS file\n" * 10)
    (hard / "Band3" / "._imageSDSS_G-101.fits").write_bytes(b"\x00\x05\x16\x07")
    rows = [(i, str(HARD_LABELLED.get(i, ""))) for i in ids] + [(HARD_NO_IMAGE, "1")]
    (hard / "hard_test_cut.csv").write_text(_csv(rows))
    return root


def make_deeplense(root: Path, split_folders: bool = True, seed: int = 0, size: int = 150) -> Path:
    """Class folders no/ sphere/ vort/ (under train/ and val/ if `split_folders`); the class sets the mean.

    Shapes alternate (H, W) and (1, H, W), as real copies mix them; one macOS `._` file is added.
    """
    rng = np.random.default_rng(seed)
    groups = {"train": 4, "val": 2} if split_folders else {"": 5}
    for g, n in groups.items():
        for c, cls in enumerate(("no", "sphere", "vort")):
            d = root / g / cls if g else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                img = (c + rng.random((size, size))).astype(np.float32)
                np.save(d / f"{k}.npy", img if k % 2 else img[None])
    first = root / ("train/no" if split_folders else "no")
    (first / "._0.npy").write_bytes(b"\x00\x05\x16\x07")
    return root


def make_hst(root: Path, seed: int = 0) -> Path:
    """5 lenses `L<k>_hst.npy`, 5 non-lenses `nl_<k>_hst.npy`, (3, 64, 64) each, plus quirks:
    one odd-shaped lens (3, 32, 32), one non-lens with a few NaNs, one junk `._` file and a README.npy."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(5):
        np.save(root / f"L{k}_hst.npy", rng.random((3, 64, 64)).astype(np.float32))
        img = rng.random((3, 64, 64))  # float64 on purpose: the importer casts
        if k == 0:
            img[0, 0, :5] = np.nan
        np.save(root / f"nl_{k}_hst.npy", img)
    np.save(root / "Lodd_hst.npy", rng.random((3, 32, 32)).astype(np.float32))
    (root / "._L0_hst.npy").write_bytes(b"\x00\x05\x16\x07")
    np.save(root / "notes.npy", np.zeros(3))
    return root
