"""Report: numbers against hand computation, references by role, notes, files, Markdown shape, bad input,
and the HTML in Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import BadInput
from harness.render import Tile, contact_sheet, rgb, sheet_top
from harness.report import build_report, terminal_table
from harness.report.figures import best_unsupervised, gap_fig
from harness.report.load import load
from harness.report.plots import FPR_GRID, roc_on_grid
from harness.report.style import BASELINE_GREY, ORACLE_GREY, palette
from harness.report.tables import BOOTSTRAP, HEADLINE, OVER_SEEDS, display, summarise
from harness.store import RUN_COLUMNS, SCHEMA, Metric, RunRecord, Store

T_975_2 = 4.302653  # t_{0.975, 2 dof}, for 3 seeds

# (method, seed) -> hard-test AUROC, (low, high) bootstrap; lens-finding · smoke · shift 0
SMOKE = {
    "source_only": [0.70, 0.72, 0.74],
    "oracle": [0.90, 0.92, 0.94],
    "target_labelled": [0.84, 0.85, 0.86],
    "dann": [0.80, 0.82],            # seed 2 failed
    "mcc": [0.78],                   # only one seed, no failure
}
BOOT = 0.03  # every run's bootstrap half-width


# what the pipeline writes for the shipped methods (each class declares its role and flags)
ROLES = {"source_only": "baseline", "oracle": "oracle"}


def _record(store: Store, method: str, seed: int, auroc: float | None, *, task="lens-finding", preset="smoke",
            shift=0.0, status="ok", seconds=10.0, role: str | None = None, oracle: bool | None = None,
            labels: bool | None = None, config: dict | None = None, tag: str = "", extra: tuple = ()) -> str:
    """One run as the pipeline writes it; role and flags default to those of the shipped method `method`."""
    role = ROLES.get(method, "method") if role is None else role
    oracle = role == "oracle" if oracle is None else oracle
    labels = (oracle or method == "target_labelled") if labels is None else labels
    run = RunRecord(task=task, method=method, seed=seed, preset=preset, fingerprint="fp",
                    config={"data": {"shift": shift}, "hparams": {}, **(config or {})}, code_version="test",
                    device="cpu", run_key=f"{task}-{preset}-{shift}-{method}-{seed}{tag}", oracle=oracle,
                    role=role,
                    uses_target_labels=labels, status=status,
                    seconds=seconds, error=None if status == "ok" else "RuntimeError: boom\ntraceback...",
                    id=f"{task}-{preset}-{shift}-{method}-{seed}{tag}")
    metrics = [] if auroc is None else [
        Metric("hard_test", "auroc", auroc, auroc - BOOT, auroc + BOOT),
        Metric("hard_test", "tpr0", auroc / 4),
        Metric("hard_test", "tpr10", auroc / 2),
        Metric("hard_test", "auroc_sel_validator", auroc - 0.01),
        Metric("hard_test", "auroc_sel_labelled", auroc - 0.005),
        Metric("easy_val", "auroc", 0.99, 0.98, 1.0),
        Metric("hard_pool", "im", 0.5), *extra,
    ]
    if task == "substructure" and auroc is not None:
        metrics += [*(Metric("hard_test", f"auroc_{c}", auroc + d)
                      for c, d in (("no_sub", 0.05), ("cdm", -0.05)))]
    return store.record(run, metrics)


SPLITS = (("hard_test", 400), ("easy_val", 200))


def _labels(rng, classes: int = 2) -> dict[str, np.ndarray]:
    """One task's test and val labels: every run of a task scores the same images (paired)."""
    return {split: rng.integers(0, classes, n) for split, n in SPLITS}


def _predictions(rng, auroc: float, classes: int = 2, labels: dict | None = None) -> pd.DataFrame:
    rows = []
    labels = labels or _labels(rng, classes)
    for split, n in SPLITS:
        y = labels[split]
        sep = math.sqrt(2) * 1.2 * (auroc - 0.5) * 4
        if classes == 2:
            s = 1 / (1 + np.exp(-(rng.normal(size=n) + sep * (y - 0.5))))
            ids = [f"i{i}" for i in range(n)]
            rows.append(pd.DataFrame({"split": split, "index": np.arange(n), "id": ids, "label": y,
                                      "score": s}))
        else:
            logits = rng.normal(size=(n, classes)) + sep * np.eye(classes)[y]
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            d = {"split": split, "index": np.arange(n), "id": [f"i{i}" for i in range(n)], "label": y}
            d.update({f"score_{k}": p[:, k] for k in range(classes)})
            rows.append(pd.DataFrame(d))
    return pd.concat(rows, ignore_index=True)


def _embeddings(rng, gap: float, classes: int = 2) -> dict:
    n = 600
    dom, lab = np.repeat([0, 1], n // 2), rng.integers(0, classes, n)
    f = rng.normal(size=(n, 16)).astype(np.float32)
    f[:, 0] += gap * dom
    f[:, 1] += 1.5 * lab
    return {"features": f, "domain": dom, "label": lab}


def _extremes(rng, k: int = 6) -> dict:
    yy, xx = np.mgrid[:32, :32] - 15.5
    r = np.hypot(yy, xx)
    imgs, labels = [], []
    for i in range(2 * k):
        lens = (i < k) != (i in (2, k + 1))  # one mistake in each half
        img = np.exp(-r**2 / 8)[None] * np.array([0.5, 1.0, 1.4])[:, None, None]
        if lens:
            img = img + np.exp(-(r - 9) ** 2 / 2)[None] * np.array([1.0, 0.6, 0.3])[:, None, None] * 0.4
        imgs.append(img + rng.normal(scale=0.02, size=img.shape))
        labels.append(int(lens))
    score = np.concatenate([np.linspace(0.99, 0.9, k), np.linspace(0.1, 0.01, k)])
    return {"images": np.asarray(imgs, np.float32), "score": score, "label": np.asarray(labels),
            "rank": np.array(["top"] * k + ["bottom"] * k)}


def make_store(root: Path, files: bool = True) -> Path:
    """Synthetic store: lens-finding smoke (table checks), demo over 3 shifts, substructure (multi-class)."""
    rng = np.random.default_rng(0)
    store = Store(root / "harness.db")
    lens, sub = _labels(rng), _labels(rng, classes=3)
    for method, aucs in SMOKE.items():
        for seed, a in enumerate(aucs):
            rid = _record(store, method, seed, a, seconds=10.0 + seed)
            if files:
                d = store.run_dir(rid)
                d.mkdir()
                _predictions(rng, a, labels=lens).to_parquet(d / "predictions.parquet")
                gap = {"source_only": 4.0, "dann": 1.0}.get(method, 2.0)
                np.savez(d / "embeddings.npz", **_embeddings(rng, gap))
                if method != "mcc":
                    np.savez(d / "extremes.npz", **_extremes(rng))
    _record(store, "dann", 2, None, status="failed")
    for shift in (0.0, 0.5, 1.0):
        for method, a in (("source_only", 0.8), ("dann", 0.85), ("oracle", 0.95)):
            for seed in range(2):
                _record(store, method, seed, a - 0.1 * shift + 0.01 * seed, preset="demo", shift=shift)
    for method, a in (("source_only", 0.75), ("dann", 0.8), ("oracle", 0.9)):
        rid = _record(store, method, 0, a, task="substructure")
        if files:
            d = store.run_dir(rid)
            d.mkdir()
            _predictions(rng, a, classes=3, labels=sub).to_parquet(d / "predictions.parquet")
            np.savez(d / "embeddings.npz", **_embeddings(rng, 2.0, classes=3))
    return store.path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def smoke(store_path) -> pd.DataFrame:
    s = summarise(load(store_path, "lens-finding", "smoke"))
    return s.set_index("method")


@pytest.fixture(scope="module")
def report(store_path, tmp_path_factory) -> Path:
    logs: list[str] = []
    out = build_report(store_path, tmp_path_factory.mktemp("reports") / "latest", log=logs.append)
    assert logs and any("wrote" in x for x in logs)
    return out


# ------------------------------------------------------------------ numbers


def test_three_seeds_t_interval(smoke):
    r = smoke.loc["source_only"]
    s = np.std([0.70, 0.72, 0.74], ddof=1)  # 0.02
    half = T_975_2 * s / math.sqrt(3)
    assert r[HEADLINE] == pytest.approx(0.72)
    assert r[f"{HEADLINE}.low"] == pytest.approx(0.72 - half, abs=1e-6)
    assert r[f"{HEADLINE}.high"] == pytest.approx(0.72 + half, abs=1e-6)
    assert r["interval"] == OVER_SEEDS
    assert r["hard_test.tpr0"] == pytest.approx(0.72 / 4)
    assert r["seconds_mean"] == pytest.approx(11.0)


def test_two_seeds_use_mean_bootstrap_interval(smoke):
    r = smoke.loc["dann"]
    assert r[HEADLINE] == pytest.approx(0.81)
    assert r[f"{HEADLINE}.low"] == pytest.approx(0.81 - BOOT)
    assert r[f"{HEADLINE}.high"] == pytest.approx(0.81 + BOOT)
    assert r["interval"] == BOOTSTRAP


def test_seed_notes(smoke):
    assert smoke.loc["dann", "seeds"] == "2 seeds (1 failed)"
    assert smoke.loc["dann", "n_failed"] == 1
    assert smoke.loc["mcc", "seeds"] == "1 seed (fewer than 3)"
    assert smoke.loc["source_only", "seeds"] == "3 seeds"


def _test_aurocs(root: Path, method: str) -> dict[int, float]:
    """Hard-test AUROC per seed of a method's stored predictions, by scikit-learn (independent of the
    report's own rank arithmetic)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for d in sorted(root.glob(f"lens-finding-smoke-0.0-{method}-*")):
        t = pd.read_parquet(d / "predictions.parquet").query("split == 'hard_test'").sort_values("index")
        out[int(d.name.rsplit("-", 1)[1])] = roc_auc_score(t["label"], t["score"])
    return out


def expected_gap(root: Path, method: str, base: str, oracle: str) -> float:
    """(mean Δ method − base) / (mean Δ oracle − base) over the seeds all three ran."""
    m, b, o = (_test_aurocs(root, x) for x in (method, base, oracle))
    seeds = sorted(set(m) & set(b) & set(o))
    num = np.mean([m[s] - b[s] for s in seeds])
    return float(num / np.mean([o[s] - b[s] for s in seeds]))


def test_gap_closed(smoke, store_path):
    """The ratio of paired differences on the runs' own predictions, over the seeds all three share."""
    root = store_path.parent
    for m in ("dann", "mcc"):
        want = expected_gap(root, m, "source_only", "oracle")
        assert smoke.loc[m, "gap_closed"] == pytest.approx(want, abs=1e-9)
        assert smoke.loc[m, "gap_closed.low"] < want < smoke.loc[m, "gap_closed.high"]
    assert 0.2 < smoke.loc["dann", "gap_closed"] < 0.8     # the stored AUROCs say (0.81 − 0.72)/0.20 = 0.45
    assert smoke.loc["source_only", "gap_closed"] == 0.0 and smoke.loc["oracle", "gap_closed"] == 1.0
    assert smoke["gap_significant"].all()


def test_paired_delta_columns_and_verdict(smoke, store_path):
    root = store_path.parent
    d, b = _test_aurocs(root, "dann"), _test_aurocs(root, "source_only")
    want = np.mean([d[s] - b[s] for s in (0, 1)])            # dann ran seeds 0 and 1 only
    r = smoke.loc["dann"]
    assert r["delta_base"] == pytest.approx(want, abs=1e-9)
    assert r["delta_base.low"] > 0                             # 0.81 vs 0.72 on 400 images: beats
    assert np.isnan(smoke.loc["source_only", "delta_base"])   # the baseline is not compared with itself
    assert np.isnan(r["delta_control"])                        # no control-role run in this store
    from harness.report.compare import verdict

    line = verdict(smoke.reset_index(), "lens-finding · smoke")
    assert "unsupervised methods beat source_only" in line and "dann +" in line
    assert "gap is significant" in line


def test_gap_significance_is_the_cards_not_the_last_rows(tmp_path):
    """Whether the baseline→oracle gap is significant is decided once per card, over every seed the two
    share: a method that ran one seed (on which the gap happens to be nil) neither hides the card's
    gap nor the other methods' ratios, and gets no ratio of its own."""
    store = Store(tmp_path / "h.db")
    rng = np.random.default_rng(3)
    y = _labels(rng)
    base0 = _predictions(rng, 0.7, labels=y)
    plan = {"source_only": [0.7] * 5, "oracle": [0.7, 0.9, 0.9, 0.9, 0.9], "dann": [0.8] * 5, "mcc": [0.6]}
    for method, aucs in plan.items():
        for seed, a in enumerate(aucs):
            rid = _record(store, method, seed, a)
            store.run_dir(rid).mkdir()
            same = seed == 0 and method in ("source_only", "oracle")   # seed 0: no gap at all
            (base0 if same else _predictions(rng, a, labels=y)).to_parquet(
                store.run_dir(rid) / "predictions.parquet")
    s = summarise(load(store.path)).set_index("method")
    assert s.index[-1] == "mcc"                               # processed last
    assert s["gap_significant"].all()
    want = expected_gap(tmp_path, "dann", "source_only", "oracle")
    assert s.loc["dann", "gap_closed"] == pytest.approx(want, abs=1e-9)
    assert np.isnan(s.loc["mcc", ["gap_closed", "gap_closed.low", "gap_closed.high"]].astype(float)).all()
    assert s.loc["oracle", "gap_closed"] == 1.0
    from harness.report.compare import verdict

    assert "gap is significant" in verdict(s.reset_index(), "lens-finding · smoke")


def test_twenty_percent_selection_is_blank_where_a_row_trained_on_that_split(smoke):
    """Choosing the checkpoint of a run that trained on the 20% split by that split is in-sample: blank."""
    col = "AUROC, 20%-label model selection"
    d = display(smoke.reset_index()).set_index("Method")[col]
    assert d["oracle †"] == "—" and d["target_labelled ‡"] == "—"
    assert d["dann"] == f"{smoke.loc['dann', 'hard_test.auroc_sel_labelled']:.3f}" != "—"


def test_gap_closed_blank_without_oracle(tmp_path):
    store = Store(tmp_path / "h.db")
    for seed, a in enumerate([0.7, 0.72, 0.74]):
        _record(store, "source_only", seed, a)
        _record(store, "dann", seed, a + 0.1)
    s = summarise(load(store.path))
    assert s["gap_closed"].isna().all()
    text = terminal_table(store.path)
    assert "dann" in text and "0.820" in text


# ------------------------------------------------------------------ roles, not names

# (method, role, oracle flag, uses hard labels, hard-test AUROC): the references have unusual names, and
# methods merely *named* like the shipped baseline and oracle are ordinary methods here
BY_ROLE = [
    ("my_baseline", "baseline", False, False, 0.70),
    ("ceiling", "oracle", False, True, 0.90),
    ("source_only", "method", False, False, 0.75),
    ("oracle", "method", False, False, 0.85),
    ("dann", "method", False, False, 0.80),
    ("no_adapt", "control", False, False, 0.97),
]


@pytest.fixture(scope="module")
def by_role(tmp_path_factory) -> Path:
    store = Store(tmp_path_factory.mktemp("roles") / "h.db")
    rng = np.random.default_rng(1)
    y = _labels(rng)
    for method, role, oracle, labels, a in BY_ROLE:
        for seed in range(3):
            rid = _record(store, method, seed, a + 0.01 * (seed - 1), role=role, oracle=oracle, labels=labels)
            store.run_dir(rid).mkdir()
            _predictions(rng, a, labels=y).to_parquet(store.run_dir(rid) / "predictions.parquet")
    return store.path


def test_gap_closed_from_roles_not_names(by_role):
    s = summarise(load(by_role)).set_index("method")
    root = by_role.parent
    assert (s["gap_baseline"] == "my_baseline").all() and (s["gap_oracle"] == "ceiling").all()
    for m in ("dann", "source_only", "oracle"):   # merely named like references: measured like methods
        assert s.loc[m, "gap_closed"] == pytest.approx(expected_gap(root, m, "my_baseline", "ceiling"))
    # their synthetic scores sit between the references (stored AUROCs give 0.25 and 0.75): neither is
    # treated as the baseline (exactly 0) or the ceiling (exactly 1)
    assert 0.0 < s.loc["source_only", "gap_closed"] < s.loc["oracle", "gap_closed"] < 1.0
    assert s.loc["my_baseline", "gap_closed"] == 0.0
    assert s.loc["ceiling", "gap_closed"] == 1.0
    assert np.isfinite(s.loc["dann", "delta_control"])             # the control is found by role too
    assert s.loc["source_only", "role"] == "method" and s.loc["ceiling", "role"] == "oracle"


def test_best_unsupervised_and_colours_from_roles(by_role):
    s = summarise(load(by_role))
    # no_adapt (control) and ceiling (oracle role) score higher but are not adaptation methods
    assert best_unsupervised(s)["method"] == "oracle"
    colours = palette(s)
    assert colours["my_baseline"] == BASELINE_GREY and colours["ceiling"] == ORACLE_GREY
    assert {colours[m] for m in ("source_only", "oracle", "dann")}.isdisjoint({BASELINE_GREY, ORACLE_GREY})


def test_report_names_the_references_found_by_role(by_role, tmp_path):
    out = build_report(by_role, tmp_path / "r", log=lambda _: None)
    page = (out / "index.html").read_text()
    assert "Dashed line: my_baseline (baseline)." in page
    assert "Embeddings: my_baseline vs best unsupervised method" in page
    for text in (page, (out / "summary.md").read_text()):
        assert "Δ vs baseline (my_baseline)" in text and "oracle: ceiling" in text
    assert "lens-finding-smoke-gap.png" in page
    csv = pd.read_csv(out / "results.csv").set_index("method")
    assert csv.loc["my_baseline", "role"] == "baseline" and csv.loc["source_only", "role"] == "method"
    assert csv.loc["dann", "gap_closed"] == pytest.approx(expected_gap(by_role.parent, "dann", "my_baseline",
                                                                        "ceiling"))


def test_store_from_before_roles(tmp_path):
    """No role column: the oracle flag makes an oracle, everything else (source_only too) is a method."""
    path = tmp_path / "old.db"
    cols = [c for c in RUN_COLUMNS if c != "role"]
    with closing(sqlite3.connect(path)) as con, con:
        con.executescript(SCHEMA.replace(",\n    role TEXT NOT NULL DEFAULT 'method'", ""))
        assert "role" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        for method, oracle, a in (("source_only", 0, 0.7), ("dann", 0, 0.8), ("ceiling", 1, 0.9)):
            row = {"id": method, "time": "2024-01-01T00:00:00", "task": "lens-finding", "method": method,
                   "seed": 0, "preset": "smoke", "fingerprint": "fp", "config": "{}", "code_version": "old",
                   "device": "cpu", "status": "ok", "seconds": 1.0, "run_key": method, "start": "source",
                   "uses_target_labels": oracle, "oracle": oracle, "error": None}
            con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols])
            con.execute("INSERT INTO metrics VALUES (?, 'hard_test', 'auroc', ?, NULL, NULL)", (method, a))
    s = summarise(load(path))
    roles = dict(zip(s["method"], s["role"]))
    assert roles == {"ceiling": "oracle", "dann": "method", "source_only": "method"}
    assert s["gap_closed"].isna().all() and (s["gap_oracle"] == "ceiling").all()
    assert (s["gap_baseline"] == "").all()
    assert best_unsupervised(s)["method"] == "dann"
    fig = gap_fig(s, {}, tmp_path, "x")
    assert fig.file is None and "no baseline run" in fig.notes[0]


def test_sorted_by_auroc_and_marked(store_path):
    s = summarise(load(store_path, "lens-finding", "smoke"))
    assert list(s["method"]) == ["oracle", "target_labelled", "dann", "mcc", "source_only"]
    text = terminal_table(store_path, task="lens-finding", preset="smoke")
    assert "oracle †" in text and "target_labelled ‡" in text
    assert "not an unsupervised result" in text
    assert "0.810 [0.780, 0.840]" in text
    assert "2 seeds (1 failed)" in text


def test_rerun_replaces_older_result(tmp_path):
    store = Store(tmp_path / "h.db")
    run = RunRecord(task="lens-finding", method="dann", seed=0, preset="smoke", fingerprint="fp", config={},
                    code_version="t", device="cpu", run_key="k", id="old", time="2024-01-01T00:00:00")
    store.record(run, [Metric("hard_test", "auroc", 0.6)])
    run.id, run.time = "new", "2024-01-02T00:00:00"
    store.record(run, [Metric("hard_test", "auroc", 0.8)])
    s = summarise(load(store.path))
    assert s.loc[0, HEADLINE] == pytest.approx(0.8) and s.loc[0, "n_seeds"] == 1


def test_other_setups_are_separate_cards_and_hp_runs_are_ablations(tmp_path):
    """A later run with another backbone, or with `--hp` overrides, neither replaces the default runs nor
    is paired with them: each setup of a card is its own comparison, named by what differs, and an
    override run is a row of its own."""
    store = Store(tmp_path / "h.db")
    small = {"preset": {"source": {"backbone": "small"}}}
    big = {"preset": {"source": {"backbone": "resnet18"}}}
    for seed in range(2):
        _record(store, "source_only", seed, 0.70, config=small)
        _record(store, "dann", seed, 0.80, config=small)
        _record(store, "dann", seed, 0.60, config={**small, "hp_overrides": {"lr": 0.1}}, tag="-hp")
        _record(store, "dann", seed, 0.90, config=big, tag="-big")
    s = summarise(load(store.path)).set_index(["card", "method"])[HEADLINE]
    assert s.loc[("[source.backbone=small]", "dann")] == pytest.approx(0.80)
    assert s.loc[("[source.backbone=small]", "dann [lr=0.1]")] == pytest.approx(0.60)
    assert s.loc[("[source.backbone=resnet18]", "dann")] == pytest.approx(0.90)
    assert len(s) == 4   # source_only has no resnet18 runs: nothing to pair the resnet18 dann with


def test_setup_labels_stay_distinct_and_ignore_spelling_and_failed_runs(tmp_path):
    """Setups differing in many fields still get distinct labels; the same card spelt two ways (a name and
    a path) is one setup; a failed run of another setup renames nothing."""
    from harness.report.load import _split_setups

    def cfg(hard="hard", backbone="tiny", prec="fp32", allow=(), feats=("a",)):
        return json.dumps({"preset": {"data": {"hard": hard, "allow_columns": list(allow)},
                                      "source": {"backbone": backbone}},
                           "precision": prec, "data": {"features": list(feats)}})
    runs = pd.DataFrame({"task": "t", "preset": "p", "card": "hard", "shift": 0.0, "status": "ok", "config": [
        cfg(), cfg(hard="datasets/cards/hard.yaml"),
        cfg(prec="bf16", allow=("x",), feats=("a", "x")),
        cfg(prec="bf16", allow=("x",), feats=("a", "x"), backbone="small")]})
    labels = list(_split_setups(runs)[0])
    assert labels[0] == labels[1] and len(set(labels[1:])) == 3
    assert labels[2].startswith("hard [data.allow_columns=") and "#" in labels[2]   # 4 keys: a digest
    one = runs.iloc[:2].copy()
    one.loc[len(one)] = {"task": "t", "preset": "p", "card": "hard", "shift": 0.0, "status": "failed",
                         "config": cfg(backbone="resnet18")}
    assert list(_split_setups(one)[0]) == ["hard"] * 3


@pytest.mark.parametrize("longer, ceiling", [(0.99, False), (None, True)])
def test_a_longer_oracle_tests_the_ceiling(tmp_path, longer, ceiling):
    """`--hp oracle.steps=N` runs, paired with the oracle on the same seeds and images, say whether the
    oracle is a ceiling at its budget: a significant gain says it is not. An oracle ablation of another
    hyper-parameter is no such test."""
    store = Store(tmp_path / "h.db")
    budget = {"preset": {"source": {"steps": 100}}}   # the source stage's, which the oracle shares
    rng = np.random.default_rng(5)
    y = _labels(rng)
    for seed in range(3):
        top = _predictions(rng, 0.75, labels=y)
        runs = [("source_only", 0.65, {}, "", None), ("dann", 0.7, {}, "", None),
                ("oracle", 0.75, {}, "", top),
                ("oracle", longer or 0.75, {"steps": 900}, "-long", None if longer else top),
                ("oracle", 0.99, {"lr": 0.1}, "-lr", None)]
        for method, a, over, tag, preds in runs:
            extra = {"hp_overrides": over} if over else {}
            rid = _record(store, method, seed, a, config={**budget, **extra}, tag=tag)
            store.run_dir(rid).mkdir()
            (preds if preds is not None else _predictions(rng, a, labels=y)).to_parquet(
                store.run_dir(rid) / "predictions.parquet")
        short = {**budget, "hp_overrides": {"steps": 50}}   # below the oracle's own budget: no check
        rid = _record(store, "oracle", seed, 0.99, config=short, tag="-short")
        store.run_dir(rid).mkdir()
        _predictions(rng, 0.99, labels=y).to_parquet(store.run_dir(rid) / "predictions.parquet")
    s = summarise(load(store.path)).set_index("method")
    assert s.loc["oracle", "gap_oracle"] == "oracle"               # the default run stays the reference
    assert len(set(s["card"])) == 1 and np.isnan(s.loc["oracle [lr=0.1]", "delta_oracle"])
    assert np.isnan(s.loc["oracle [steps=50]", "delta_oracle"])
    d = s.loc["oracle [steps=900]"]
    from harness.report.compare import verdict

    line = verdict(s.reset_index(), "lens-finding · smoke")
    alone = verdict(s.drop(index="dann").reset_index(), "t")   # no unsupervised method: still said
    assert "no unsupervised method has paired runs" in alone and "oracle [steps=900] gains" in alone
    assert "is a ceiling is untested" not in line
    untested = verdict(s.drop(index="oracle [steps=900]").reset_index(), "t")
    assert "whether oracle is a ceiling is untested" in untested and "`--hp oracle.steps=200`" in untested
    if ceiling:   # the same scores: a zero difference
        assert d["delta_oracle"] == 0 and d["delta_oracle.low"] == 0
        assert "oracle [steps=900] gains +0.000 [+0.000, +0.000] over oracle: no significant gain" in line
    else:
        assert d["delta_oracle.low"] > 0 and "more steps raise it, so it is not yet a ceiling" in line


def test_an_oracle_below_the_baseline_is_called_no_ceiling(tmp_path):
    """An oracle significantly worse than the baseline is not merely a "not significant" gap."""
    store = Store(tmp_path / "h.db")
    rng = np.random.default_rng(7)
    y = _labels(rng)
    for seed in range(3):
        for method, a in (("source_only", 0.8), ("dann", 0.8), ("oracle", 0.6)):
            rid = _record(store, method, seed, a)
            store.run_dir(rid).mkdir()
            _predictions(rng, a, labels=y).to_parquet(store.run_dir(rid) / "predictions.parquet")
    s = summarise(load(store.path))
    from harness.report.compare import verdict

    line = verdict(s, "t")
    assert s.set_index("method").loc["oracle", "delta_base.high"] < 0
    assert "the source_only→oracle gap is negative (-0." in line and "so it is no ceiling" in line
    assert "not significant" not in line


def test_near_leak_columns_are_named_in_the_verdict(tmp_path):
    """Columns that passed the leak guard only just (recorded by the run) are named in the card's verdict."""
    store = Store(tmp_path / "h.db")
    near = {"data": {"shift": 0.0, "near_leaks": {"mag_r": 0.9712, "flux": 0.9601}}}
    for seed in range(2):
        _record(store, "source_only", seed, 0.7, config=near)
        _record(store, "dann", seed, 0.8, config=near)
    line = summarise(load(store.path))["near_leaks"].iloc[0]
    assert json.loads(line) == near["data"]["near_leaks"]
    from harness.report.compare import verdict

    text = verdict(summarise(load(store.path)), "t")
    assert "nearly separate the labels" in text and "mag_r 0.971, flux 0.960" in text


@pytest.mark.parametrize("estimate, said", [(0.17, True), (0.85, False)])
def test_a_bbse_prior_far_from_the_cards_is_named_in_the_verdict(tmp_path, estimate, said):
    store = Store(tmp_path / "h.db")
    prior = (Metric("hard_pool", "prior_bbse_lens", estimate),
             Metric("hard_pool", "prior_declared_lens", 0.9))
    for seed in range(2):
        _record(store, "source_only", seed, 0.7, extra=prior)
        _record(store, "dann", seed, 0.8, extra=prior)
    from harness.report.compare import verdict

    text = verdict(summarise(load(store.path)), "t")
    assert ("BBSE estimates the pool's lens share at 0.17 where the card declares 0.90" in text) == said
    assert said or "BBSE" not in text


def test_a_card_names_its_source_when_not_the_tasks_and_folders_by_their_last_two_parts(tmp_path):
    """A hard card adapted from another source is a comparison of its own, titled with that source; an
    imported folder named `hard` is not taken for the `hard` card."""
    store = Store(tmp_path / "h.db")
    for easy, hard, tag in (("easy", "hard", ""), ("/x/cards/easy-seeing.yaml", "hard", "-s"),
                            ("datasets/bologna/easy", "datasets/bologna/hard", "-b"),
                            ("/x", "/my.set", "-r")):
        for method, a in (("source_only", 0.7), ("dann", 0.75)):
            cfg = {"data": {"easy": easy, "hard": hard, "shift": None}}
            _record(store, method, 0, a, config=cfg, tag=tag)
    cards = set(summarise(load(store.path))["card"])
    assert cards == {"hard", "hard from easy-seeing", "bologna/hard from bologna/easy", "my.set from x"}


def test_report_on_a_card_run_with_and_without_its_catalog_by_the_baseline_alone(tmp_path):
    """The image-only variant is a card of its own; with only baseline runs, the suite figure has no rows
    to draw, and the report is written without it (it used to fail in the heatmap)."""
    store = Store(tmp_path / "h.db")
    for use in (True, False):
        cfg = {"data": {"hard": "hard", "shift": 0.0}, "preset": {"source": {"use_catalog": use}}}
        _record(store, "source_only", 0, 0.7 if use else 0.65, config=cfg, tag="" if use else "-img")
    out = build_report(store.path, tmp_path / "r", log=lambda _: None)
    text = (out / "summary.md").read_text()
    assert "hard (image-only)" in text and "Shift suite" not in text


def test_method_with_only_failed_runs(tmp_path):
    store = Store(tmp_path / "h.db")
    _record(store, "source_only", 0, 0.7)
    _record(store, "cdan", 0, None, status="failed")
    _record(store, "cdan", 1, None, status="failed")
    s = summarise(load(store.path)).set_index("method")
    assert s.loc["cdan", "seeds"] == "0 seeds (2 failed)" and np.isnan(s.loc["cdan", HEADLINE])
    assert list(s.index) == ["source_only", "cdan"]  # no AUROC sorts last
    out = build_report(store.path, tmp_path / "r", log=lambda _: None)
    page = (out / "index.html").read_text()
    assert "Failed runs" in page and "RuntimeError: boom" in page


def test_roc_grid_is_a_step_function():
    pred = pd.DataFrame({"split": "hard_test", "label": [0, 0, 0, 0, 1, 1],
                         "score": [0.1, 0.2, 0.3, 0.9, 0.8, 0.95]})
    tpr, negatives = roc_on_grid(pred)
    assert negatives == 4
    # one positive above every negative; the second only after the 0.9 negative (FPR 0.25)
    assert tpr[FPR_GRID < 0.25].max() == pytest.approx(0.5)
    assert tpr[FPR_GRID >= 0.25].min() == pytest.approx(1.0)
    assert roc_on_grid(pred.assign(split="easy_val")) is None


def test_rgb_stretch_range():
    img = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    out = rgb(img)
    assert out.shape == (16, 16, 3) and out.min() >= 0 and out.max() <= 1
    assert rgb(np.zeros((1, 8, 8))).shape == (8, 8, 3)


def test_sheet_stretch_keeps_brightness_differences():
    img = np.random.default_rng(0).normal(size=(3, 16, 16))
    np.testing.assert_array_equal(rgb(img, sheet_top([img])), rgb(img))  # one image: its own stretch
    dim = img / 4
    assert rgb(dim).mean() == pytest.approx(rgb(img).mean())           # own stretch hides the difference
    assert rgb(dim, sheet_top([img, dim])).mean() < 0.6 * rgb(img, sheet_top([img, dim])).mean()


def test_contact_sheet_layout_and_bad_input():
    img = np.random.default_rng(0).normal(size=(3, 8, 8))
    fig = contact_sheet([("top", [Tile(img, "a")] * 5), ("", []), ("bottom", [Tile(img, "b\nc")] * 2)],
                        "title", per_row=4)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 3 * 4 and len(shown) == 7  # 5 tiles on 2 rows, then 2 on a new row
    assert [ax.get_title() for ax in shown] == ["a"] * 5 + ["b\nc"] * 2
    with pytest.raises(BadInput, match="no cutouts"):
        contact_sheet([("top", [])], "empty")
    with pytest.raises(BadInput, match="cutout must be"):
        rgb(np.zeros((2, 3, 4, 5)))


# ------------------------------------------------------------------ files


def test_report_files(report):
    names = {p.name for p in report.iterdir()}
    assert {"index.html", "summary.md", "results.csv"} <= names
    for kind in ("roc", "auroc", "gap", "embedding", "extremes"):
        assert f"lens-finding-smoke-{kind}.png" in names
    assert "lens-finding-demo-shift.png" in names
    assert "substructure-smoke-roc.png" in names
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]  # temp folder renamed away


def test_a_report_replaces_an_earlier_report_but_nothing_else(store_path, tmp_path):
    """Pointed at an earlier report (its own files only), a report replaces it; a folder holding anything
    else is refused whole, its files untouched."""
    out = build_report(store_path, tmp_path / "r", log=lambda _: None)
    (out / "index.html").write_text("stale")
    build_report(store_path, out, log=lambda _: None)
    assert (out / "index.html").read_text() != "stale"
    (out / "my notes.txt").write_text("keep")
    with pytest.raises(BadInput, match="holds files a report does not write"):
        build_report(store_path, out, log=lambda _: None)
    assert (out / "my notes.txt").read_text() == "keep" and (out / "results.csv").is_file()


def test_results_csv(report):
    df = pd.read_csv(report / "results.csv")
    for col in ("task", "preset", "shift", "method", "n_seeds", "n_failed", "interval", "seconds_mean",
                "gap_closed", HEADLINE, f"{HEADLINE}.low", f"{HEADLINE}.high", "hard_test.tpr0",
                "hard_test.tpr10", "easy_val.auroc", "hard_test.auroc_sel_validator",
                "hard_test.auroc_sel_labelled", "hard_pool.im"):
        assert col in df.columns, col
    smoke = df[(df["task"] == "lens-finding") & (df["preset"] == "smoke")].set_index("method")
    assert len(smoke) == len(SMOKE)
    assert smoke.loc["source_only", HEADLINE] == pytest.approx(0.72)
    assert "delta_base" in df.columns and "gap_significant" in df.columns
    assert len(df) == len(SMOKE) + 3 * 3 + 3


def test_summary_md_is_markdown_table(report):
    md = (report / "summary.md").read_text()
    tables = re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.MULTILINE)
    assert len(tables) == 6  # demo × 3 shifts, smoke, substructure (+ its per-class table)
    for t in tables:
        rows = t.strip("\n").split("\n")
        assert re.fullmatch(r"\|( --- \|)+", rows[1])
        ncol = rows[0].count(" | ") + 1
        for row in rows:
            cells = re.split(r"(?<!\\)\|", row)[1:-1]
            assert len(cells) == ncol, row
    assert "### lens-finding · smoke" in md
    assert "### lens-finding · demo · shift 0.5" in md
    assert "not an unsupervised result" in md
    assert "Per-class one-vs-rest AUROC" in md
    assert "| Method | macro | cdm | no_sub |" in md
    assert "| oracle † | 0.900 [0.870, 0.930] | 0.850 | 0.950 |" in md


def test_missing_run_files_are_noted(tmp_path):
    path = make_store(tmp_path, files=False)
    out = build_report(path, tmp_path / "r", task="lens-finding", log=lambda _: None)
    page = (out / "index.html").read_text()
    assert "no run in this group has usable hard-test predictions" in page
    assert "no run in this group has a usable extremes.npz" in page
    assert "lens-finding-smoke-auroc.png" in page


# ------------------------------------------------------------------ bad input


def test_empty_store(tmp_path):
    store = Store(tmp_path / "h.db")
    with pytest.raises(BadInput, match="holds no finished runs"):
        build_report(store.path, tmp_path / "out")
    _record(store, "dann", 0, None, status="failed")
    with pytest.raises(BadInput, match="holds no finished runs"):
        terminal_table(store.path)
    assert not (tmp_path / "out").exists()


def test_unknown_task_and_preset(store_path, tmp_path):
    with pytest.raises(BadInput, match=r"no runs for task 'x' \(store has: lens-finding, substructure\)"):
        build_report(store_path, tmp_path / "out", task="x")
    with pytest.raises(BadInput, match="no runs for preset 'full'"):
        terminal_table(store_path, preset="full")
    assert not (tmp_path / "out").exists()


def test_missing_store(tmp_path):
    with pytest.raises(BadInput, match="no such results store"):
        build_report(tmp_path / "nope.db", tmp_path / "out")
    (tmp_path / "junk.db").write_text("not sqlite")
    with pytest.raises(BadInput):
        terminal_table(tmp_path / "junk.db")


# ------------------------------------------------------------------ HTML


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.src.append(a["src"])
        if tag in ("script", "link") or (a.get("src") or a.get("href") or "").startswith("http"):
            self.external.append(tag)


def test_html_self_contained(report):
    p = _Images()
    p.feed((report / "index.html").read_text())
    assert p.src and not p.external
    for src in p.src:
        assert (report / src).is_file(), src


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and shutil.which("apt-get"):
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, capture_output=True,
                           timeout=300,
                           env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        except (OSError, subprocess.TimeoutExpired):
            pass
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("headless Chromium not available (no /usr/bin/chromium and apt-get install failed)")
    return exe


def test_html_renders_in_chromium(report, chromium, tmp_path):
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           (report / "index.html").resolve().as_uri()]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert '<table class="results">' in dom
    assert "dann" in dom and "oracle †" in dom and "2 seeds (1 failed)" in dom
    assert dom.count("<img") >= 6


def test_the_published_anchor_is_printed_only_beside_the_card_it_is_about():
    """Tidball et al.'s numbers are Model A→B: printed under Model II (substructure-b), not Model III."""
    from harness.report.classes import anchor

    def group(card: str) -> pd.DataFrame:
        return pd.DataFrame({"task": ["substructure"], "card": [card]})

    assert anchor(group("substructure-b")).startswith("Anchor: published, not re-measured here: Tidball")
    assert anchor(group("substructure-b [source.backbone=cnn4]")).startswith("Anchor:")
    assert anchor(group("substructure-c")) == "" and anchor(group("sub-b-shallow")) == ""
    assert anchor(group("substructure-b from substructure-c")) == ""   # another source: not their A→B
    assert anchor(pd.DataFrame({"task": ["ssl-real"], "card": ["hst-lenses"]})).startswith("Anchor:")
