"""The source stage from the SimCLR encoder against from scratch, on the source's own validation split.

How a task's `source_init` was chosen (`harness/tasks.py`): each call trains one source finder through
the harness's own stage (`stage_start`: same data, recipe, budget and seed as a run), in the cache
folder you name (keep it apart from a run's store), and prints the easy-val per-class and macro
AUROC. No target label or target image is read. Run the two inits side by side, one thread each:

    python -m bench.source_init --init scratch --task substructure --preset demo --datasets-dir D \
        --cache /tmp/init-cache [--backbone tiny] [--steps 8000] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.source_holdout import add_stage_args, easy_val_report, line, stage_preset
from harness.domains import prepare_data
from harness.stages import stage_start
from harness.training import Runtime, resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="substructure")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--datasets-dir", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="a folder for this study's stages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    add_stage_args(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    preset = stage_preset(a)
    cpu = torch.device("cpu")
    rt = Runtime(device=cpu, precision=resolve_precision(cpu, "auto"), quiet=True, log=print)
    p = prepare_data(preset, a.datasets_dir, rt, a.task)
    t0 = time.perf_counter()
    *_, model = stage_start(p, a.seed, preset, a.cache, rt)   # stage keys name the init and backbone
    src = preset.source
    print(line(f"init {src.init}, {src.backbone}, {src.steps} steps, seed {a.seed} "
               f"({time.perf_counter() - t0:.0f}s), easy val", easy_val_report(model, p, rt), p.classes))


if __name__ == "__main__":
    main()
