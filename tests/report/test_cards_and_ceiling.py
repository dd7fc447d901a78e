"""Each card is its own group with its own verdict; an oracle still moving is flagged, not trusted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.load import load
from harness.report.tables import label, summarise, text
from harness.store import Metric, RunRecord, Store


def _run(store: Store, card: str, method: str, seed: int, role: str, sep: float, y: np.ndarray, rng,
         extra: list[Metric] = ()) -> None:
    rid = f"{card}-{method}-{seed}"
    oracle = role == "oracle"
    store.record(RunRecord(task="lens-finding", method=method, seed=seed, preset="demo", fingerprint="fp",
                           config={"data": {"hard": f"cards/{card}.yaml", "shift": 1.0}, "hparams": {}},
                           code_version="t", device="cpu", run_key=rid, role=role, oracle=oracle,
                           uses_target_labels=oracle, id=rid),
                 [Metric("hard_test", "auroc", 0.5 + sep / 10), *extra])
    s = rng.normal(size=y.size) + sep * y
    store.run_dir(rid).mkdir()
    pd.DataFrame({"split": "hard_test", "index": np.arange(y.size), "id": [f"i{i}" for i in range(y.size)],
                  "label": y, "score": s}).to_parquet(store.run_dir(rid) / "predictions.parquet")


def test_two_cards_same_shift_are_two_groups_with_their_own_verdicts(tmp_path):
    rng = np.random.default_rng(0)
    store = Store(tmp_path / "h.db")
    y = rng.integers(0, 2, 500)
    for seed in range(3):
        for card, gain in (("camera", 1.0), ("hard", 0.0)):     # dann helps on camera only
            _run(store, card, "source_only", seed, "baseline", 1.0, y, rng)
            _run(store, card, "dann", seed, "method", 1.0 + gain, y, rng)
            _run(store, card, "oracle", seed, "oracle", 3.0, y, rng)
    s = summarise(load(store.path))
    assert set(s["group"]) == {"lens-finding · demo · camera", "lens-finding · demo · hard"}
    out = text(s)
    assert "lens-finding · demo · camera: 1 of 1 unsupervised methods beat source_only" in out
    assert "lens-finding · demo · hard: 0 of 1 unsupervised methods beat source_only" in out


def test_unconverged_oracle_is_flagged():
    row = pd.Series({"method": "oracle", "oracle": True, "uses_target_labels": True,
                     "hard_test.curve_last_delta": 0.02})
    assert label(row).endswith("(not converged)")
    assert "not converged" not in label(row.copy().replace(0.02, 0.004))


def test_suite_heatmap_and_one_verdict_line_per_card(tmp_path):
    # dann helps on camera only: its camera cell is coloured (significant), its hard cell is grey
    from harness.report import build_report
    from harness.report.tables import summarise

    rng = np.random.default_rng(1)
    store = Store(tmp_path / "h.db")
    y = rng.integers(0, 2, 500)
    for seed in range(3):
        for card, gain in (("camera", 1.0), ("hard", 0.0)):
            _run(store, card, "source_only", seed, "baseline", 1.0, y, rng)
            _run(store, card, "dann", seed, "method", 1.0 + gain, y, rng)
            _run(store, card, "oracle", seed, "oracle", 3.0, y, rng)
    s = summarise(load(store.path))
    dann = s[s["method"] == "dann"].set_index("card")
    assert dann.loc["camera", "delta_base.low"] > 0
    assert dann.loc["hard", "delta_base.low"] < 0 < dann.loc["hard", "delta_base.high"]
    out = build_report(store.path, tmp_path / "rep", log=lambda m: None)
    page = (out / "index.html").read_text()
    assert "Shift suite · lens-finding · demo" in page and (out / "lens-finding-demo-suite.png").is_file()
    assert "<li>camera: 1 of 1 unsupervised methods beat source_only" in page
    assert "<li>hard: 0 of 1 unsupervised methods beat source_only" in page
    assert "camera: 1 of 1" in (out / "summary.md").read_text()
