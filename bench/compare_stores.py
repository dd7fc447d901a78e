"""Compare the metrics of two results stores bit for bit: the proof that a refactor changed no number.

For each (method, seed), the latest 'ok' run of each store is taken and every metric row
(split, name -> value, low, high) is compared exactly (floats by their bits, so 0.1 + 2e-17 is
a difference and two missing values are not). Every difference is printed: a (method, seed) or
a metric present in one store only, or a value that differs. Run ids, times and seconds are not
compared. Both stores are opened read-only.

    python -m bench.compare_stores A.db B.db

Exit 0 when every metric of every (method, seed) is identical, 1 when anything differs, 2 when
a store cannot be read.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import struct
import sys
from contextlib import closing
from pathlib import Path

Key = tuple[str, int]                                 # (method, seed)
Metrics = dict[tuple[str, str], tuple]                # (split, name) -> (value, low, high)


def latest_ok_metrics(db: Path) -> dict[Key, tuple[str, Metrics]]:
    """(method, seed) -> (run id, metrics) of the latest 'ok' run in the store at `db`."""
    if not Path(db).is_file():
        raise FileNotFoundError(f"{db}: no such results store")
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        runs = con.execute("SELECT id, method, seed FROM runs WHERE status = 'ok' "
                           "ORDER BY time, id").fetchall()
        latest = {(m, int(s)): rid for rid, m, s in runs}  # later rows overwrite earlier ones
        out = {}
        for key, rid in latest.items():
            rows = con.execute("SELECT split, name, value, low, high FROM metrics WHERE run = ?", (rid,))
            out[key] = (rid, {(sp, n): (v, lo, hi) for sp, n, v, lo, hi in rows})
    return out


def _bits(x: object) -> object:
    """A float by its IEEE-754 bits (so -0.0 != 0.0 and every NaN is itself); anything else as is."""
    if isinstance(x, float):
        return "nan" if math.isnan(x) else struct.pack("<d", x)
    return x


def same(a: tuple, b: tuple) -> bool:
    return [_bits(x) for x in a] == [_bits(x) for x in b]


def differences(a: dict[Key, tuple[str, Metrics]], b: dict[Key, tuple[str, Metrics]]) -> list[str]:
    """Every difference between two stores' latest ok runs, one line each."""
    out = []
    for key in sorted(set(a) | set(b)):
        label = f"{key[0]} seed {key[1]}"
        if key not in b:
            out.append(f"{label}: only in A (run {a[key][0]})")
            continue
        if key not in a:
            out.append(f"{label}: only in B (run {b[key][0]})")
            continue
        (ra, ma), (rb, mb) = a[key], b[key]
        for m in sorted(set(ma) | set(mb)):
            name = f"{label} {m[0]}/{m[1]}"
            if m not in mb:
                out.append(f"{name}: only in A {ma[m]}")
            elif m not in ma:
                out.append(f"{name}: only in B {mb[m]}")
            elif not same(ma[m], mb[m]):
                fa, fb = (tuple(repr(x) for x in v) for v in (ma[m], mb[m]))
                out.append(f"{name}: A {fa} != B {fb} (value, low, high; runs {ra} / {rb})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="first results store (.db)")
    ap.add_argument("b", type=Path, help="second results store (.db)")
    args = ap.parse_args(argv)
    try:
        a, b = latest_ok_metrics(args.a), latest_ok_metrics(args.b)
    except (OSError, sqlite3.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    diffs = differences(a, b)
    for line in diffs:
        print(line)
    n_metrics = sum(len(m) for k, (_, m) in a.items() if k in b)
    print(f"compared {len(set(a) & set(b))} (method, seed) runs, {n_metrics} metrics: "
          + (f"{len(diffs)} difference(s)" if diffs else "no difference"))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
