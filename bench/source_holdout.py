"""The source model's AUROC on a fresh source-domain set: an estimate no choice was made on.

The source stage's budget and backbone are chosen on the easy validation split, so the easy-val AUROC a
run reports is slightly optimistic. This script loads the cached SSL and source stages of a finished run
(same store, preset and task, so nothing is retrained), generates `--n` new images of the source card
with another data seed (`--data-seed`, never the run's), puts them through the same model input
(resampled to the run's field, stretched as the task says), and prints per-class and macro AUROC with
bootstrap intervals next to the easy-val numbers of the same model.

    python -m bench.source_holdout --task substructure --preset demo --store STORE \
        --datasets-dir DIR [--seed 0] [--n 1500] [--data-seed 101]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from harness.config import get_preset
from harness.domains import load_domain, model_input, prepare_data
from harness.metrics import multiclass_report
from harness.stages import stage_source, stage_ssl
from harness.store import Store
from harness.tasks import get_task
from harness.training import Runtime, resolve_precision


def probabilities(model: torch.nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Softmax of the model over image-only inputs, in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))
            out.append(model(xb, torch.zeros(len(xb), 0)).softmax(-1).numpy())
    return np.concatenate(out)


def line(name: str, rep: dict, classes: list[str]) -> str:
    parts = [f"macro {rep['auroc'][0]:.3f} [{rep['auroc'][1]:.3f}, {rep['auroc'][2]:.3f}]"]
    parts += [f"{c} {rep['auroc_' + c][0]:.3f}" for c in classes]
    return f"{name}: " + ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="substructure")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--datasets-dir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0, help="the run's training seed")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--data-seed", type=int, default=101)
    a = ap.parse_args()
    preset = get_task(a.task).apply(get_preset(a.preset))
    if a.data_seed in (preset.data.seed, preset.data.seed + 1):
        raise SystemExit(f"--data-seed {a.data_seed} is one of the run's own data seeds")
    cpu = torch.device("cpu")   # the run's precision on this CPU, so its cached stages are the ones found
    rt = Runtime(device=cpu, precision=resolve_precision(cpu, "auto"), quiet=True, log=lambda m: None)
    p = prepare_data(preset, a.datasets_dir, rt, a.task)
    cache = Store(a.store).cache
    key, state = stage_ssl(p, a.seed, preset.ssl, preset.source.backbone, cache, rt)
    _, model = stage_source(p, a.seed, key, state, preset.source, cache, rt)
    classes = p.classes
    val = probabilities(model, p.source_val.images.cpu().numpy())
    print(line(f"easy val ({len(val)} images, the split the budget was chosen on)",
               multiclass_report(p.source_val.labels.cpu().numpy(), val, classes), classes))
    fresh = load_domain(preset.data.easy, a.n, a.data_seed, a.datasets_dir, rt, preset.data.workers)
    x = model_input(fresh, get_task(a.task), p.image_size, p.fov)
    print(line(f"fresh {preset.data.easy} ({a.n} images, data seed {a.data_seed})",
               multiclass_report(fresh.labels, probabilities(model, x), classes), classes))


if __name__ == "__main__":
    main()
