"""Command line of `bench/gpu.sh`: each stage writes one JSON file into a work folder; `table` turns the
folder into the one Markdown table the script prints, every row with its goal and whether it was met.

    python -m bench.gpu_bench dann --json W/dann.json [--backbones small,resnet18,resnet50] [--smoke]
    python -m bench.gpu_bench knn --json W/knn.json [--bank 1000000] [--smoke]
    python -m bench.gpu_bench e2e --json W/e2e.json --store DB --log LOG --seconds S --rc RC --limit L
    python -m bench.gpu_bench table --dir W [--smoke]

A stage that failed or ran out of time leaves no JSON (or a partial one): `table` then prints its rows as
"skipped: reason", the reason read from the stage's `W/<stage>.rc` ("rc seconds limit", written by
gpu.sh) and the last line of `W/<stage>.log`. `table` imports neither torch nor the harness, so the
table prints even when the environment is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

BACKBONES = ("small", "resnet18", "resnet50")
GOAL_BARE = 0.9            # (a)/(c): the harness step keeps >= 90% of the bare backbone's speed
GOAL_E2E_S = 180.0         # `run --method all --preset full --seeds 0,1,2` under 3 minutes
GOAL_SCORE_MIN = 1e6       # score >= 1M cutouts/min on one H200
GOAL_KNN = 0.05            # kNN search < 5% of a contrastive_knn step (bench/RESULTS.md)


def _env() -> dict:
    """Where the numbers were taken: device name, torch version (recorded beside every stage)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else "none (CPU)"}


def _write(path: Path, data: dict) -> None:
    """Atomic JSON write: a stage killed mid-write leaves the previous (partial) file, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def cmd_dann(a: argparse.Namespace) -> None:
    """The three DANN step rates per backbone; the JSON is rewritten after each backbone."""
    from bench.gpu_step import dann_row, device_and_precision

    dev, prec = device_and_precision(a.device)
    if a.smoke:
        timing = {"warmup": 0, "target_s": 0.0, "min_steps": 2, "max_steps": 2, "stock_steps": 2,
                  "workers": 0}
    else:
        timing = {"warmup": 5, "target_s": 2.0, "min_steps": 10, "max_steps": 500, "stock_steps": 40,
                  "workers": min(8, os.cpu_count() or 1)}
    out = {"stage": "dann", **_env(), "device": str(dev), "rows": [], "errors": {},
           "backbones": a.backbones.split(",")}
    for bb in out["backbones"]:
        try:
            out["rows"].append(dann_row(bb, a.batch, a.size, a.n, dev, prec, **timing))
        except Exception as e:  # noqa: BLE001 - one backbone's failure (say, out of memory) skips its row only
            out["errors"][bb] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        _write(a.json, out)
        done = [r for r in out["rows"] if r["backbone"] == bb]
        print(f"dann {bb}: {done[0] if done else out['errors'][bb]}", file=sys.stderr, flush=True)


def cmd_knn(a: argparse.Namespace) -> None:
    """kNN search at the bank size vs one contrastive_knn step."""
    from bench.gpu_step import device_and_precision, knn_row

    dev, prec = device_and_precision(a.device)
    timing = (0, 0.0, 2, 2) if a.smoke else (3, 1.0, 5, 100)
    row = knn_row(a.bank, a.queries, a.backbone, a.size, dev, prec, *timing)
    _write(a.json, {"stage": "knn", **_env(), "device": str(dev), **row})
    print(f"knn: {row}", file=sys.stderr)


def cmd_e2e(a: argparse.Namespace) -> None:
    """What the end-to-end run got done: wall time, exit code, finished runs of those planned."""
    from harness.registry import all_methods

    planned = len(all_methods()) * a.seeds if a.methods == "all" else len(a.methods.split(",")) * a.seeds
    counts: dict = {}
    if a.store.is_file():   # the run is over (finished or killed), so a plain connection is safe
        try:
            with closing(sqlite3.connect(a.store)) as con:
                counts = dict(con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        except sqlite3.Error as err:
            print(f"e2e: store unreadable ({err})", file=sys.stderr)
    ok, failed = counts.get("ok", 0), counts.get("failed", 0)
    last = ""
    if a.log.is_file():
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", a.log.read_text(errors="replace"))   # tqdm's cursor moves
        for line in re.split(r"[\r\n]+", text):
            m = re.search(r"\b(data|ssl|source): .*", line.strip())
            if m:
                last = m.group(0)[:120]
    _write(a.json, {"stage": "e2e", "command": a.command, "seconds": a.seconds, "rc": a.rc, "limit": a.limit,
                    "planned": planned, "ok": ok, "failed": failed, "last_stage": last})


# ----------------------------------------------------------------------------- the table
def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _why(w: Path, stage: str) -> str:
    """Why a stage produced no numbers, from gpu.sh's `<stage>.rc` and the stage's log."""
    rc_file = w / f"{stage}.rc"
    if not rc_file.is_file():
        return "stage not run"
    parts = rc_file.read_text().split()
    if parts and parts[0] == "budget":
        return "no time left in the script's budget (BENCH_BUDGET_S)"
    rc, secs, limit = (parts + ["?", "?", "?"])[:3]
    if rc in ("124", "137"):
        return f"timed out after {limit} s"
    tail = ""
    log = w / f"{stage}.log"
    if log.is_file():
        lines = [x.strip() for x in re.split(r"[\r\n]+", log.read_text(errors="replace")) if x.strip()]
        tail = f": {lines[-1][:160]}" if lines else ""
    return f"failed (rc {rc} after {secs} s){tail}"


def _met(ok: bool, smoke: bool) -> str:
    return "n/a (smoke sizes)" if smoke else ("**yes**" if ok else "**no**")


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def dann_rows(w: Path, smoke: bool, backbones: list[str]) -> list[tuple[str, str, str, str]]:
    """(what, measured, goal, met) for each backbone's DANN step."""
    d = _load(w / "dann.json")
    out = []
    for bb in (d or {}).get("backbones", backbones):
        row = next((r for r in (d or {}).get("rows", []) if r["backbone"] == bb), None)
        b = row["batch_per_domain"] if row else 0
        size = f"{b}+{b} images at {row['image_size']}px" if row else ""
        what = f"DANN step, `{bb}`" + (f", {size}" if size else "")
        goal = f"(a)/(c) ≥ {GOAL_BARE}"
        if row is None:
            err = (d or {}).get("errors", {}).get(bb) or _why(w, "dann")
            out.append((what, f"skipped: {err}", goal, "—"))
            continue
        measured = (f"(a) harness `dann` {row['precision']}: {_rate(row['harness_img_s'])} img/s · (b) stock "
                    f"pytorch-adapt + DataLoader fp32: {_rate(row['stock_img_s'])} img/s · (c) bare backbone "
                    f"fwd+bwd {row['precision']}: {_rate(row['bare_img_s'])} img/s · (a)/(c) "
                    f"**{row['harness_over_bare']:.2f}** · (a)/(b) {row['harness_over_stock']:.2f}x")
        out.append((what, measured, goal, _met(row["harness_over_bare"] >= GOAL_BARE, smoke)))
    return out


def tests_row(w: Path, smoke: bool) -> tuple[str, str, str, str]:
    """The CUDA path of the unit tests: pytest's summary line, met when nothing failed or was skipped."""
    what, goal = "CUDA tests: `pytest tests/test_cuda.py tests/test_determinism.py`", "all pass, none skipped"
    log = w / "tests.log"
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    summary = next((x.strip("= ") for x in reversed(text) if re.search(r"\d+ (passed|failed|error)", x)), "")
    if not summary:
        return what, _why(w, "tests"), goal, _met(False, smoke)
    ok = not re.search(r"failed|error|skipped", summary)
    return what, summary, goal, "n/a (smoke: CPU)" if smoke else ("**yes**" if ok else "**no**")


def e2e_row(w: Path, smoke: bool) -> tuple[str, str, str, str]:
    """The end-to-end run's wall time against the 3-minute goal."""
    e = _load(w / "e2e.json")
    cmd = e["command"] if e else "python -m harness run --method all --preset full --seeds 0,1,2"
    what = f"end to end: `{cmd}`"
    goal = f"< {GOAL_E2E_S:.0f} s"
    if e is None:
        return what, f"skipped: {_why(w, 'e2e')}", goal, "—"
    runs = f"{e['ok']} of {e['planned']} runs finished" + (f", {e['failed']} failed" if e["failed"] else "")
    if e["rc"] in (124, 137):
        last = f"; last stage line: {e['last_stage']}" if e["last_stage"] else ""
        measured = f"> {e['limit']:.0f} s (stopped at the stage limit; {runs}{last})"
        met = _met(False, smoke) if e["limit"] >= GOAL_E2E_S else "unknown (limit below the goal)"
        return what, measured, goal, met
    if e["rc"] != 0:
        return what, f"failed (rc {e['rc']}) after {e['seconds']:.0f} s; {runs}", goal, _met(False, smoke)
    return what, f"**{e['seconds']:.0f} s** ({runs})", goal, _met(e["seconds"] < GOAL_E2E_S, smoke)


def score_row(w: Path, smoke: bool) -> tuple[str, str, str, str]:
    """`score` throughput against 1M cutouts/min."""
    s = _load(w / "score.json")
    goal = f"≥ {GOAL_SCORE_MIN:,.0f} cutouts/min"
    if s is None:
        return "`score` throughput (`bench/score_throughput.py`)", f"skipped: {_why(w, 'score')}", goal, "—"
    what = (f"`score` throughput, `{s['backbone']}` ({s['weights']}), {s['size']}px, n={s['n']:,}, "
            f"batch {s['batch']}, {s['precision']}")
    measured = (f"**{_rate(s['score_per_min'])} cutouts/min** · bare `model(x)` on pre-made device tensors "
                f"{_rate(s['baseline_per_min'])}/min · ratio {s['ratio']:.2f}")
    return what, measured, goal, _met(s["score_per_min"] >= GOAL_SCORE_MIN, smoke)


def knn_row(w: Path, smoke: bool) -> tuple[str, str, str, str]:
    """kNN search at the bank size against 5% of a contrastive_knn step."""
    k = _load(w / "knn.json")
    goal = f"search < {GOAL_KNN:.0%} of a contrastive_knn step"
    if k is None:
        return "kNN search (`harness.neighbours.knn_search`)", f"skipped: {_why(w, 'knn')}", goal, "—"
    what = f"kNN search, bank {k['bank']:,} × {k['dim']}, {k['queries']} queries, k={k['k']}, {k['backend']}"
    measured = (f"{k['search_ms']:.2f} ms per search · contrastive_knn step (`{k['backbone']}`, "
                f"{k['queries']} images, {k['precision']}, its own search included) {k['step_ms']:.1f} ms · "
                f"**{k['search_over_step']:.1%}**")
    return what, measured, goal, _met(k["search_over_step"] < GOAL_KNN, smoke)


def table(w: Path, smoke: bool, backbones: list[str]) -> str:
    """The one Markdown table: every row with its goal and whether it was met."""
    stages = (_load(w / f"{s}.json") for s in ("dann", "knn", "score"))
    env = next((e for e in stages if e and "gpu" in e), {})
    head = (f"GPU bench{' (SMOKE: tiny sizes on this machine, not a measurement)' if smoke else ''} · "
            f"{env.get('gpu', 'device unknown')} · torch {env.get('torch', '?')}")
    rows = [tests_row(w, smoke), *dann_rows(w, smoke, backbones), e2e_row(w, smoke), score_row(w, smoke),
            knn_row(w, smoke)]
    lines = [head, "", "| benchmark | measured | goal | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(c.replace('|', '/') for c in r)} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Dispatch one stage (or the table) of bench/gpu.sh."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dann")
    d.add_argument("--backbones", default=",".join(BACKBONES))
    d.add_argument("--batch", type=int, default=256, help="images per domain")
    d.add_argument("--size", type=int, default=64)
    d.add_argument("--n", type=int, default=4096, help="images per synthetic domain")
    k = sub.add_parser("knn")
    k.add_argument("--bank", type=int, default=1_000_000)
    k.add_argument("--queries", type=int, default=256, help="contrastive_knn batch")
    k.add_argument("--backbone", default="resnet18")
    k.add_argument("--size", type=int, default=64)
    for p in (d, k):
        p.add_argument("--device", default="auto")
        p.add_argument("--smoke", action="store_true")
        p.add_argument("--json", type=Path, required=True)
    e = sub.add_parser("e2e")
    e.add_argument("--json", type=Path, required=True)
    e.add_argument("--store", type=Path, required=True)
    e.add_argument("--log", type=Path, required=True)
    e.add_argument("--command", required=True)
    e.add_argument("--methods", default="all")
    e.add_argument("--seeds", type=int, default=3, help="how many seeds the run was given")
    e.add_argument("--seconds", type=float, required=True)
    e.add_argument("--rc", type=int, required=True)
    e.add_argument("--limit", type=float, required=True)
    t = sub.add_parser("table")
    t.add_argument("--dir", type=Path, required=True)
    t.add_argument("--smoke", action="store_true")
    t.add_argument("--backbones", default=",".join(BACKBONES))
    a = ap.parse_args(argv)
    if a.cmd == "table":
        print(table(a.dir, a.smoke, a.backbones.split(",")))
    else:
        {"dann": cmd_dann, "knn": cmd_knn, "e2e": cmd_e2e}[a.cmd](a)


if __name__ == "__main__":
    main()
