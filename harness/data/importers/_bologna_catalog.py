"""The Bologna challenge's catalog CSVs: where they sit, how IDs and labels are read, which columns may
be model inputs (an allow-list: `--catalog-columns`; every other column becomes `truth_<name>`), and
the duplicate-ID rule (same label: dropped and counted; conflicting labels: refused). Kept apart from
`bologna` (which reads the FITS files) so each holds one job.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.features import feature_matrix
from harness.data.importers.quirks import Options, Quirks
from harness.errors import BadInput

BOLOGNA_CATALOGS = {"easy": ("easy_test.csv",), "hard": ("hard_test_cut.csv", "hard_test.csv")}
BOLOGNA_TRUTH = ("is_lens", "einstein_area", "numb_pix_lensed_image", "flux_lensed_image_in_sigma")


def norm_id(v: object) -> str:
    """IDs as text, so '00123', '123' and 123.0 (pandas' float for a column with gaps) all match."""
    s = str(v).strip()
    if re.fullmatch(r"\d+(\.0*)?", s):
        s = s.split(".")[0].lstrip("0") or "0"
    return s


def find_catalog(path: Path, domain: str) -> Path:
    names = BOLOGNA_CATALOGS[domain]
    for folder in (path, path / domain):
        for n in names:
            if (folder / n).is_file():
                return folder / n
    raise BadInput(f"{path}: no {domain} catalog {' or '.join(names)} (looked in {path} and {path / domain})")


def read_catalog(csv: Path, quirks: Quirks, opt: Options) -> pd.DataFrame:
    """Read a challenge CSV: `id`, the `--catalog-columns` observables as they are, all else `truth_*`."""
    try:   # the ID column as text whatever its header's case: as floats, 17-digit IDs would collide
        head = pd.read_csv(csv, nrows=0).columns
        cat = pd.read_csv(csv, dtype={c: str for c in head if str(c).strip().lower() == "id"})
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BadInput(f"{csv}: unreadable catalog ({str(e).splitlines()[0] if str(e) else e!r})") from None
    cat.columns = [str(c).strip() for c in cat.columns]
    lower = {c.lower(): c for c in cat.columns}
    missing = [c for c in ("id", "is_lens") if c not in lower]
    if missing:
        raise BadInput(f"{csv}: catalog lacks column(s) {', '.join(missing)} (has: {', '.join(cat.columns)})")
    absent = [c for c in opt.catalog_columns if c not in cat.columns]
    if absent:
        raise BadInput(f"--catalog-columns {absent[0]}: {csv} has no such column "
                       f"(has: {', '.join(cat.columns)})")
    rename = {lower["id"]: "id"}
    rename.update({lower[t]: f"truth_{t}" for t in BOLOGNA_TRUTH if t in lower})
    rename.update({c: f"truth_{c}" for c in cat.columns
                   if c not in rename and c not in opt.catalog_columns and not c.startswith("truth_")})
    cat = cat.rename(columns=rename)
    cat["truth_is_lens"] = _labels_column(cat["truth_is_lens"], csv)
    ids = cat["id"].map(lambda v: "" if pd.isna(v) else norm_id(v))
    for i in np.flatnonzero(ids.to_numpy() == ""):
        quirks.add("no_id", labelled=bool(cat["truth_is_lens"].iloc[i] >= 0))
    cat["id"] = ids
    cat = cat[ids != ""]
    labels = cat["truth_is_lens"].fillna(-1)
    conflict = labels.groupby(cat["id"]).nunique() > 1
    if conflict.any():
        bad = sorted(conflict[conflict].index)
        raise BadInput(f"{csv}: {len(bad)} ID(s) appear more than once with different is_lens "
                       f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); fix the catalog")
    dup = cat["id"].duplicated()
    for ident in cat.loc[dup, "id"]:
        quirks.add("duplicate_id", ident)
    cat = cat[~dup].reset_index(drop=True)
    _check_catalog_columns(cat, csv, opt)
    return cat


def _check_catalog_columns(cat: pd.DataFrame, csv: Path, opt: Options) -> None:
    """The named observables must be numeric and pass the leak guard on the labelled rows."""
    if not opt.catalog_columns:
        return
    known = (cat["truth_is_lens"] >= 0).to_numpy()
    labels = cat["truth_is_lens"].to_numpy()[known].astype(int)
    try:
        feature_matrix(cat[known], labels, list(opt.catalog_columns), allow=opt.allow_columns, log=opt.log)
    except BadInput as e:
        raise BadInput(f"{csv}: {e}") from None


def _labels_column(col: pd.Series, csv: Path) -> pd.Series:
    """is_lens as float: 0/1 labelled, NaN (empty or negative) unlabelled; anything else is BadInput."""
    if col.dtype == bool:
        col = col.astype(float)
    values = pd.to_numeric(col, errors="coerce")
    bad = col.notna() & (values.isna() | ~(values.isin([0, 1]) | (values < 0)))
    if bad.any():
        raise BadInput(f"{csv}: is_lens holds '{col[bad].iloc[0]}'; expected 0, 1 or empty")
    return values.where(values >= 0)
