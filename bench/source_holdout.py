"""The source model's AUROC on a fresh source-domain set: an estimate no choice was made on.

The source stage's budget and backbone are chosen on the easy validation split, so the easy-val AUROC a
run reports is slightly optimistic. This script loads the cached SSL and source stages of a finished run
(same store, preset and task, so nothing is retrained), generates `--n` new images of the source card
with another data seed (`--data-seed`, never the run's), puts them through the same model input
(`harness.score.score_set`: resampled to the run's field, stretched as the task says, with the
run's catalog features), and prints per-class and macro AUROC with
bootstrap intervals next to the easy-val numbers of the same model.

    python -m bench.source_holdout --task substructure --preset demo --store STORE \
        --datasets-dir DIR [--seed 0] [--n 1500] [--data-seed 101]

With `--cache C` instead of `--store` it reads a stage trained by `bench.source_init` into the cache C;
give it the same `--init`, `--backbone` and `--steps` as that call (stage keys name all three).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from harness.config import get_preset
from harness.domains import load_domain, prepare_data
from harness.metrics import multiclass_report
from harness.score import score_set
from harness.stages import stage_start
from harness.store import Store
from harness.tasks import get_task
from harness.training import Runtime, infer, resolve_precision


def line(name: str, rep: dict, classes: list[str]) -> str:
    parts = [f"macro {rep['auroc'][0]:.3f} [{rep['auroc'][1]:.3f}, {rep['auroc'][2]:.3f}]"]
    parts += [f"{c} {rep['auroc_' + c][0]:.3f}" for c in classes]
    return f"{name}: " + ", ".join(parts)


def easy_val_report(model, p, rt: Runtime) -> dict:
    """Per-class and macro AUROC (with intervals) of a source finder on the easy validation split."""
    val = infer(lambda b: model(b.images, b.catalog).float().softmax(-1), p.source_val, 512, rt.autocast)
    return multiclass_report(p.source_val.labels.cpu().numpy(), val.cpu().numpy(), p.classes)


def add_stage_args(ap: argparse.ArgumentParser) -> None:
    """The source-stage choices a study varies (default: the task's and preset's own)."""
    ap.add_argument("--init", choices=["ssl", "scratch"], default=None, help="default: the task's")
    ap.add_argument("--backbone", default=None, help="default: the preset's")
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's source steps")


def stage_preset(a: argparse.Namespace):
    """The task's preset with the source stage's init, backbone and steps as the arguments say."""
    preset = get_task(a.task).apply(get_preset(a.preset))
    changes = {k: v for k, v in (("init", a.init), ("backbone", a.backbone), ("steps", a.steps)) if v}
    return preset.replace("source", **changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="substructure")
    ap.add_argument("--preset", default="demo")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="a finished run's store: its cached stages")
    where.add_argument("--cache", type=Path, help="a `bench.source_init` cache folder")
    ap.add_argument("--datasets-dir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0, help="the run's training seed")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--data-seed", type=int, default=101)
    add_stage_args(ap)
    a = ap.parse_args()
    preset = stage_preset(a)
    if a.data_seed in (preset.data.seed, preset.data.seed + 1):
        raise SystemExit(f"--data-seed {a.data_seed} is one of the run's own data seeds")
    cpu = torch.device("cpu")   # the run's precision on this CPU, so its cached stages are the ones found
    rt = Runtime(device=cpu, precision=resolve_precision(cpu, "auto"), quiet=True, log=lambda m: None)
    p = prepare_data(preset, a.datasets_dir, rt, a.task)
    cache = a.cache or Store(a.store).cache
    *_, model = stage_start(p, a.seed, preset, cache, rt)
    classes = p.classes
    print(line(f"easy val ({len(p.source_val.labels)} images, the split the budget was chosen on)",
               easy_val_report(model, p, rt), classes))
    fresh = load_domain(preset.data.easy, a.n, a.data_seed, a.datasets_dir, rt, preset.data.workers)
    # the same model input and catalog features as the run, through `score`'s own path
    info = {"bands": p.source.images.shape[1], "task": p.task, "size": p.image_size, "fov": p.fov,
            "features": p.columns, "run": "source stage", "method": "source", "seed": a.seed,
            "weights": "final", "code_version": ""}
    df = score_set(model, fresh, info, rt)
    probs = (df[[f"score_{k}" for k in range(len(classes))]].to_numpy() if "score" not in df
             else np.stack([1 - df["score"], df["score"]], axis=1))
    print(line(f"fresh {preset.data.easy} ({a.n} images, data seed {a.data_seed})",
               multiclass_report(fresh.labels, probs, classes), classes))

if __name__ == "__main__":
    main()
