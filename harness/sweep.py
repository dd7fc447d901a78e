"""Sweeps over methods x seeds: locally in-process, or as Ray tasks when Ray is installed.

Each (method, seed) run has a key (hash of method, seed and the whole config); with `--resume`
a run whose key already finished in the store is skipped, as DomainBed's `done` markers do.
"""

from __future__ import annotations

from harness.domains import prepare_data
from harness.errors import BadInput
from harness.pipeline import Options, run_method
from harness.registry import check_hparams
from harness.stages import stage_source, stage_ssl


def _job(method: str, seed: int, opts: Options, skip_done: bool) -> str:
    p = prepare_data(opts.preset, opts.datasets_dir, opts.runtime, opts.task)
    return run_method(method, seed, p, opts,
                      skip_done=skip_done)


def run_ray(methods: list[str], seeds: list[int], opts: Options, skip_done: bool = False) -> list[str]:
    """One Ray task per (method, seed); each prepares its own device data and writes the shared store."""
    try:
        import ray
    except ImportError:
        raise BadInput("--backend ray: Ray is not installed (pip install 'ray[default]'), "
                       "or use --backend local") from None
    check_hparams(methods, opts.hp_overrides)
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=not opts.quiet)
    remote = ray.remote(num_cpus=1, num_gpus=1 if opts.device.type == "cuda" else 0)(_job)
    # the stage caches are shared through the store folder: warm them once before fanning out
    pr, rt = opts.preset, opts.runtime
    p = prepare_data(pr, opts.datasets_dir, rt, opts.task)
    for seed in seeds:
        ssl_key, ssl_state = stage_ssl(p, seed, pr.ssl, pr.source.backbone, opts.store.cache, rt)
        stage_source(p, seed, ssl_key, ssl_state, pr.source, opts.store.cache, rt)
    return ray.get([remote.remote(m, s, opts, skip_done) for s in seeds for m in methods])
