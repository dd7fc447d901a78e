"""Metrics, predictions and the run folder's files.

This module owns what happens after training and selection are over: it is the only place that
reads the hard test labels (from the image set, at that moment), computes every hard-test and
easy-val metric with its bootstrap interval and the label-free pool validators, scores selected
checkpoints on the test split, and collects predictions, embeddings and the extreme-scoring test
stamps. `write_run_folder` writes those files through `harness.fs.atomic_dir`, so a run folder
is either complete or absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.adapt import Checkpoint
from harness.api import AdaptationMethod, DomainData
from harness.data import imageset
from harness.domains import Prepared
from harness.fs import atomic_dir
from harness.metrics import (
    accuracy,
    binary_report,
    class_scores,
    multiclass_report,
    score_auroc,
)
from harness.store import Metric
from harness.training import Autocast, infer


@dataclass
class Evaluation:
    """The final weights' metrics, predictions and embeddings, and their hard-test scores (reused
    when a selector picks the last checkpoint, which holds those weights)."""

    metrics: list[Metric]
    preds: pd.DataFrame
    emb: dict[str, np.ndarray]
    test_scores: np.ndarray


def evaluate(method: AdaptationMethod, p: Prepared, batch_size: int, autocast: Autocast, seed: int,
             n_boot: int, classes: list[str], pool_validators: dict[str, float]) -> Evaluation:
    """All test/val metrics of the method's current weights, plus predictions and embeddings.
    `pool_validators` are those weights' label-free scores on the hard pool, already computed at
    the last checkpoint (`harness.adapt.adapt`), recorded here rather than computed again."""
    method.eval()
    out: list[Metric] = []
    preds = []
    test_scores = np.empty(0)
    for split, data, s_idx in (("hard_test", p.test, p.hard.split("test")),
                               ("easy_val", p.source_val, p.easy.split("val"))):
        s = p.hard if split == "hard_test" else p.easy
        y = s.labels[s_idx]                       # read here, after training and selection
        sc = class_scores(infer(method.predict, data, batch_size, autocast))
        test_scores = sc if split == "hard_test" else test_scores
        ids = s.catalog["id"].to_numpy()[s_idx]
        if np.ndim(sc) == 1:
            for name, (v, lo, hi) in binary_report(y, sc, seed=seed, n_boot=n_boot).items():
                out.append(Metric(split, name, v, lo, hi))
            preds.append(pd.DataFrame({"split": split, "index": s_idx, "id": ids, "label": y, "score": sc}))
        else:
            for name, (v, lo, hi) in multiclass_report(y, sc, classes, seed=seed, n_boot=n_boot).items():
                out.append(Metric(split, name, v, None if np.isnan(lo) else lo, None if np.isnan(hi) else hi))
            out.append(Metric(split, "accuracy", accuracy(y, sc)))
            df = pd.DataFrame({"split": split, "index": s_idx, "id": ids, "label": y})
            for k in range(sc.shape[1]):
                df[f"score_{k}"] = sc[:, k]
            preds.append(df)
    out += [Metric("hard_pool", name, v) for name, v in pool_validators.items()]
    k = min(1000, len(p.source_val), len(p.test))
    val, test = (DomainData(d.images[:k], d.catalog[:k]) for d in (p.source_val, p.test))
    fe = infer(method.features, val, batch_size, autocast)
    ft = infer(method.features, test, batch_size, autocast)
    emb = {"features": torch.cat([fe, ft]).cpu().numpy().astype(np.float32),
           "domain": np.r_[np.zeros(k, int), np.ones(k, int)],
           "label": np.r_[p.easy.labels[p.easy.split("val")][:k], p.hard.labels[p.hard.split("test")][:k]]}
    return Evaluation(out, pd.concat(preds, ignore_index=True), emb, test_scores)


def checkpoint_test_auroc(method: AdaptationMethod, state: dict, p: Prepared, batch_size: int,
                          autocast: Autocast) -> float:
    """Hard-test AUROC of `method` with the weights `state` (a selected checkpoint)."""
    method.load_state_dict(state)
    method.eval()
    sc = class_scores(infer(method.predict, p.test, batch_size, autocast))
    return score_auroc(p.hard.labels[p.hard.split("test")], sc)


class SelectedAuroc:
    """Hard-test AUROC of the checkpoints that selection picked, each set of weights scored once:
    the last checkpoint is the final weights `evaluate` already scored; a step-0 start model shared
    by methods (its `start_key`) is scored once per process, in `shared` (the `Prepared`'s memo, so
    one test split; keyed by the weights, the batch size and `precision` too); a checkpoint two
    selectors both picked, once. Each value is what `checkpoint_test_auroc` would return."""

    def __init__(self, method: AdaptationMethod, cks: list[Checkpoint], final: Evaluation, p: Prepared,
                 batch_size: int, autocast: Autocast, shared: dict, precision: str) -> None:
        self.method, self.p, self.bs, self.autocast, self.shared = method, p, batch_size, autocast, shared
        self.precision = precision
        self.done = {id(cks[-1]): score_auroc(p.hard.labels[p.hard.split("test")], final.test_scores)}

    def __call__(self, c: Checkpoint) -> float:
        key = ("hard_test_auroc", c.start_key, self.bs, self.precision) if c.start_key else None
        if id(c) not in self.done:
            if key in self.shared:
                self.done[id(c)] = self.shared[key]
            else:
                self.done[id(c)] = checkpoint_test_auroc(self.method, c.state, self.p, self.bs, self.autocast)
        if key:
            self.shared[key] = self.done[id(c)]
        return self.done[id(c)]


def _extremes(preds: pd.DataFrame, hard: imageset.ImageSet, k: int = 8) -> dict:
    """The k highest- and k lowest-scoring hard-test stamps (binary tasks only), for the report."""
    t = preds[preds["split"] == "hard_test"]
    if "score" not in t:
        return {}
    t = t.sort_values("score", ascending=False)
    pick = pd.concat([t.head(k), t.tail(k)])
    return {"images": np.asarray(hard.images[pick["index"].to_numpy()], dtype=np.float32),
            "score": pick["score"].to_numpy(), "label": pick["label"].to_numpy(),
            "rank": np.array(["top"] * min(k, len(t)) + ["bottom"] * min(k, len(t)))}


def write_run_folder(out: Path, preds: pd.DataFrame, emb: dict[str, np.ndarray], hard: imageset.ImageSet,
                     model: dict, checkpoints: list[dict]) -> Path:
    """Write a run's files into the new folder `out`, atomically: predictions, embeddings,
    extremes (binary tasks), the final weights and the checkpoints' selection scores."""
    with atomic_dir(out) as tmp:
        preds.to_parquet(tmp / "predictions.parquet", index=False)
        np.savez_compressed(tmp / "embeddings.npz", **emb)
        ex = _extremes(preds, hard)
        if ex:
            np.savez_compressed(tmp / "extremes.npz", **ex)
        torch.save(model, tmp / "model.pt")
        (tmp / "checkpoints.json").write_text(json.dumps(checkpoints, indent=1))
    return out
