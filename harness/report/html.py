"""The one-page HTML report: inline CSS, PNGs referenced relatively, no script, so it opens offline."""

from __future__ import annotations

import html

import pandas as pd

from harness.report.classes import anchor, per_class
from harness.report.compare import verdict
from harness.report.figures import Fig
from harness.report.tables import html_table, legend

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
h3 { margin-bottom: .3rem; } .meta { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
th, td { border: 1px solid #d6d6d6; padding: .3rem .55rem; text-align: right; }
th { background: #f3f3f3; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; font-weight: 600; }
td:first-child, td:nth-child(2) { white-space: nowrap; } details td { white-space: nowrap; }
tr.oracle td { background: #eeeeee; color: #444; } tr.labels td { background: #fbf6e6; }
.legend { font-size: .82rem; color: #444; margin: .2rem 0 1rem; padding-left: 1.2rem; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; } .note { font-size: .85rem; color: #8a5a00; }
.scroll { overflow-x: auto; } details { margin: 1rem 0; } code { font-size: .85em; }
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def figure(f: Fig) -> str:
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in f.notes)
    if f.file is None:
        return f"<h3>{_esc(f.title)}</h3>{notes}"
    return (f"<h3>{_esc(f.title)}</h3><figure><img src=\"{_esc(f.file)}\" alt=\"{_esc(f.title)}\">"
            f"<figcaption>{_esc(f.caption)}</figcaption></figure>{notes}")


def runs_table(runs: pd.DataFrame) -> str:
    cols = ["id", "time", "task", "preset", "card", "shift", "method", "seed", "status", "seconds", "device",
            "code_version"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_esc(r[c])}</td>" for c in cols) + "</tr>"
                   for _, r in runs[cols].iterrows())
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _first_line(error: object) -> str:
    return str(error or "no error recorded").splitlines()[0][:300]


def failed_list(runs: pd.DataFrame) -> str:
    bad = runs[runs["status"] != "ok"]
    if bad.empty:
        return ""
    items = "".join(
        f"<li><code>{_esc(r['id'])}</code> {_esc(r['method'])} seed {_esc(r['seed'])} "
        f"({_esc(r['task'])} · {_esc(r['preset'])}): {_esc(_first_line(r['error']))}</li>"
        for _, r in bad.iterrows())
    return f"<h2>Failed runs</h2><ul>{items}</ul>"


def page(title: str, meta: list[str], sections: list[tuple[str, pd.DataFrame, list[Fig]]],
         shift_figs: list[Fig], runs: pd.DataFrame, suite: list[tuple[Fig, list[str]]] = ()) -> str:
    """Assemble the page: a shift suite's heatmap and per-card verdicts on top; per group a table, its
    legend and its figures; then shift plots and the run list."""
    parts = [f"<h1>{_esc(title)}</h1>", '<p class="meta">' + "<br>".join(_esc(m) for m in meta) + "</p>"]
    for f, lines in suite:
        parts += [f"<h2>{_esc(f.title)}</h2>", figure(f),
                  '<ul class="verdict">' + "".join(f"<li>{_esc(x)}</li>" for x in lines) + "</ul>"]
    for name, group, figs in sections:
        notes = '<ul class="legend">' + "".join(f"<li>{_esc(x)}</li>" for x in legend(group)) + "</ul>"
        said = f'<p class="verdict"><b>Verdict.</b> {_esc(verdict(group, name))}</p>'
        parts += [f"<h2>{_esc(name)}</h2>", said,
                  f'<div class="scroll">{html_table(group)}</div>', notes]
        pc = per_class(group)
        if pc is not None:
            parts += ["<h3>Per-class one-vs-rest AUROC (hard test)</h3>", html_table(group, pc)]
        if anchor(group):
            parts.append(f'<p class="legend">{_esc(anchor(group))}</p>')
        parts += [figure(f) for f in figs]
    if shift_figs:
        parts.append("<h2>AUROC vs domain shift</h2>")
        parts += [figure(f) for f in shift_figs]
    parts.append(failed_list(runs))
    parts.append(f"<details><summary>All {len(runs)} runs</summary>{runs_table(runs)}</details>")
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
