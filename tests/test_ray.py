"""`--backend ray` for real: a local Ray on 127.0.0.1 with 2 CPUs and 2 fake GPUs (a custom resource
count; the runs themselves train on the CPU). The driver alone writes the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.config import get_preset
from harness.errors import BadInput
from harness.pipeline import Options, run
from harness.store import Store

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
from harness.ray_backend import RaySettings, run_ray  # only with Ray installed

METHODS, SEEDS = ["source_only", "dann"], [0]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield ray
    ray.shutdown()


def _opts(root: Path, db: str, **kw) -> Options:
    return Options(preset=get_preset("smoke"), store=Store(root / db), device=torch.device("cpu"),
                   datasets_dir=root / "ds", quiet=True, **kw)


def _by_key(db: Path) -> tuple[dict, dict]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT id, run_key, device FROM runs WHERE status = 'ok'")
        runs = {k: (i, d) for i, k, d in rows}
        ids = {i: k for k, (i, _) in runs.items()}
        rows = con.execute("SELECT run, split, name, value FROM metrics")
        metrics = {(ids[r], s, n): v for r, s, n, v in rows}
    return runs, metrics


def test_ray_sweep_matches_local_keys_and_metrics_and_uses_every_fake_gpu(local_ray, smoke_root: Path
                                                                         ) -> None:
    ids = run_ray(METHODS, SEEDS, _opts(smoke_root, "ray.db"), settings=RaySettings(gpus_per_job=1))
    assert len(ids) == len(set(ids)) == 2
    # the local backend with one thread, as each Ray job has (CPU sums depend on the thread count)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(METHODS, SEEDS, _opts(smoke_root, "local.db"))
    finally:
        torch.set_num_threads(threads)
    ray_runs, ray_metrics = _by_key(smoke_root / "ray.db")
    local_runs, local_metrics = _by_key(smoke_root / "local.db")
    assert set(ray_runs) == set(local_runs) and len(ray_runs) == 2
    assert ray_metrics == local_metrics
    # every run folder is in the driver's store folder, and the store is sound
    assert Store(smoke_root / "ray.db").problems() == []
    assert all((smoke_root / i / "model.pt").is_file() for i in ids)
    # placement: each job held one of the two fake GPUs, and two ran at once (both ids used)
    gpus = [d.rsplit(" GPU ", 1)[1] for _, d in ray_runs.values()]
    assert set(gpus) == {"0", "1"}, gpus
    assert all(" · ray node " in d for _, d in ray_runs.values())


def test_ray_resume_skips_finished_keys_and_jobs_can_take_both_gpus(local_ray, smoke_root: Path,
                                                                    tmp_path: Path) -> None:
    opts = _opts(smoke_root, "ray.db")
    before = len(opts.store.runs())
    ids = run_ray(METHODS, SEEDS, opts, skip_done=True)
    assert len(opts.store.runs()) == before and len(set(ids)) == 2   # nothing ran twice
    # a job asking for two GPUs gets both; stages travel through a folder the user names
    opts = _opts(smoke_root, "ray2.db")
    (run_id,) = run_ray(["source_only"], [0], opts, settings=RaySettings(gpus_per_job=2,
                                                                           stage_dir=tmp_path / "stages"))
    device = opts.store.runs().set_index("id").loc[run_id, "device"]
    assert device.endswith("GPU 0,1"), device
    assert any(p.name.startswith("source-") for p in (tmp_path / "stages").iterdir())


def test_ray_refuses_a_bad_hyper_parameter_before_submitting(local_ray, smoke_root: Path) -> None:
    opts = _opts(smoke_root, "ray-bad.db", hp_overrides={"dann": {"lr": "fast"}})
    with pytest.raises(BadInput):
        run_ray(["dann"], [0], opts)


def test_sweep_cli_on_ray(local_ray, smoke_root: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["sweep", "--backend", "ray", "--method", "source_only", "--seeds", "0", "--resume",
               "--preset", "smoke", "--store", str(smoke_root / "ray.db"), "--datasets-dir",
               str(smoke_root / "ds"), "--device", "cpu", "--quiet"])
    assert rc == 0
    assert "source_only" in capsys.readouterr().out
