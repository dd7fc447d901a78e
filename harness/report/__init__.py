"""Comparative report of the results store: tables, plots and a one-page offline HTML.

Reads only the SQLite store (through `harness.store`'s schema) and the per-run folders beside it,
so a report can be rebuilt at any time from results alone.

    build_report(store_path, out)   -> out/ with index.html, summary.md, results.csv and PNGs
    terminal_table(store_path)      -> a compact text table to print after a run
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import BadInput
from harness.fs import atomic_dir
from harness.report import figures, html, tables
from harness.report.load import latest_ok, load
from harness.report.style import palette

__all__ = ["build_report", "terminal_table"]


def terminal_table(store_path: Path | str, task: str | None = None, preset: str | None = None) -> str:
    """Fixed-width comparison (method, AUROC [interval], TPR0, TPR10, gap closed, seeds) per group."""
    return tables.text(tables.summarise(load(store_path, task, preset)))


REPORT_FILES = {"index.html", "summary.md", "results.csv", ".DS_Store", "Thumbs.db"}   # and *.png


def _check_out(out: Path) -> None:
    """A report replaces only a folder that is missing, empty or an earlier report (its own files and no
    others): pointed at a folder of other files, it refuses instead of deleting them."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file, not a folder")
    if out.is_dir():
        alien = sorted(p.name for p in out.iterdir()
                       if p.is_dir() or not (p.name in REPORT_FILES or p.suffix == ".png"))
        if alien:
            raise BadInput(f"--out {out}: holds files a report does not write ({', '.join(alien[:3])}"
                           f"{', …' if len(alien) > 3 else ''}); a report replaces only an earlier report, "
                           "so choose another folder")


def build_report(store_path: Path | str, out: Path | str, task: str | None = None, preset: str | None = None,
                 log: Callable[[str], object] = print) -> Path:
    """Write the report folder `out` atomically and return it; bad input raises BadInput before any write."""
    _check_out(Path(out))
    sel = load(store_path, task, preset)
    summary = tables.summarise(sel)
    ok = latest_ok(sel)
    colours = palette(summary)
    out = Path(out)
    n_ok = int((sel.runs["status"] == "ok").sum())
    log(f"report: {len(sel.runs)} runs ({n_ok} ok), {summary['method'].nunique()} methods -> {out}")
    with atomic_dir(out, overwrite=True) as tmp:
        sections = []
        for title, group in tables.groups(summary):
            figs = figures.group_figures(sel, group, ok, colours, tmp, title)
            for f in figs:
                for n in f.notes:
                    log(f"report: {title}: {f.title}: {n}")
            sections.append((title, group, figs))
        shift_figs = figures.shift_figures(summary, colours, tmp)
        suite = figures.suite_figures(summary, tmp)
        tables.results_csv(summary).to_csv(tmp / "results.csv", index=False, float_format="%.6g")
        meta = [f"Store: {Path(store_path).resolve()}",
                f"Generated: {time.strftime('%Y-%m-%d %H:%M:%S')}",
                f"Runs: {len(sel.runs)} ({n_ok} ok, {len(sel.runs) - n_ok} failed)",
                "Code versions: " + ", ".join(sorted(set(map(str, sel.runs["code_version"])))),
                "Devices: " + ", ".join(sorted(set(map(str, sel.runs["device"]))))]
        said = "".join(f"## {f.title}\n\n![{f.title}]({f.file})\n\n" + "".join(f"- {x}\n" for x in lines)
                       + "\n" for f, lines in suite)
        (tmp / "summary.md").write_text("# Lens DA Harness — results\n\n" + "".join(f"{m}  \n" for m in meta)
                                        + "\n" + said + tables.markdown(summary), encoding="utf-8")
        (tmp / "index.html").write_text(html.page("Lens DA Harness — results", meta, sections, shift_figs,
                                                  sel.runs, suite), encoding="utf-8")
    log(f"report: wrote {out / 'index.html'}")
    return out
