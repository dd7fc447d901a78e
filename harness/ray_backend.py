"""`--backend ray`: a sweep's (method, seed) runs as Ray tasks, on a local instance or a cluster.

Only the driver writes the store: SQLite on a cluster's network filesystem does not take writers
from many nodes. The driver computes what runs share once (the device data, the SSL encoder and
the source model of each seed) and ships it to the workers: the prepared data as one object in
Ray's object store, the stage caches as their files, through the object store by default or
through a folder every node can read (`--stage-dir`). Each worker trains in a scratch folder with
a scratch store of its own and returns its run (row, metrics, folder files); the driver adopts it
into the real store, so the run keeps its id, and `--resume` matches on run keys the driver knows
before anything is submitted. A job declares the CPUs and GPUs it takes (`--cpus-per-job`,
`--gpus-per-job`); Ray places it, and a CUDA worker sees only the GPU Ray gave it.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.domains import Prepared, prepare_data
from harness.errors import BadInput
from harness.pipeline import Options, run_config, run_method
from harness.progress import RunBar, quiet_log
from harness.registry import check_hparams, get_method
from harness.stages import cache_dir, stage_start


@dataclasses.dataclass(frozen=True)
class RaySettings:
    """Where Ray runs and what each job takes."""

    address: str | None = None      # None: a local instance; 'auto' or 'ray://host:10001': a cluster
    cpus_per_job: float = 1.0
    gpus_per_job: float | None = None   # None: 1 on CUDA, 0 on a CPU
    stage_dir: Path | None = None   # a folder all nodes read; None: ship stages through the object store


def _stage_folders(p: Prepared, opts: Options, seed: int, joint: bool) -> list[str]:
    """Compute (or reuse) one seed's shared stages on the driver; the names of their cache folders."""
    pr, cache, rt = opts.preset, opts.store.cache, opts.runtime
    names = []
    for with_pool in (False, True) if joint else (False,):
        ssl_key, _, source_key, _ = stage_start(p, seed, pr, cache, rt, with_pool=with_pool)
        names += [cache_dir(cache, "ssl", ssl_key).name, cache_dir(cache, "source", source_key).name]
    return names


def _pack(cache: Path, names: list[str], stage_dir: Path | None) -> dict[str, bytes] | str:
    """The stage folders as {relative path: bytes}, or copied into `stage_dir` (returned as a path)."""
    if stage_dir is not None:
        for n in names:
            if not (stage_dir / n).is_dir():
                shutil.copytree(cache / n, stage_dir / n)
        return str(stage_dir)
    return {f"{n}/{f.name}": f.read_bytes() for n in names for f in sorted((cache / n).iterdir())}


def _unpack(stages: dict[str, bytes] | str, names: list[str], cache: Path) -> None:
    for n in names:
        (cache / n).mkdir(parents=True, exist_ok=True)
    if isinstance(stages, str):
        for n in names:
            shutil.copytree(Path(stages) / n, cache / n, dirs_exist_ok=True)
        return
    for rel, data in stages.items():
        (cache / rel).write_bytes(data)


def _job(opts: Options, method: str, seed: int, p: Prepared, stages: dict[str, bytes] | str,
         names: list[str], card: str | None, threads: int) -> dict:
    """One run in a Ray worker, in a scratch folder; returns what the driver records."""
    import ray

    from harness.store import Store
    from harness.training import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(max(1, threads))
    with tempfile.TemporaryDirectory(prefix="harness-ray-") as tmp:
        tmp = Path(tmp)
        _unpack(stages, names, tmp / "cache")
        p = p.to(opts.device)
        if card is not None:   # the target card's declared lens fraction is read beside the hard set
            (tmp / "hard").mkdir()
            (tmp / "hard" / "card.yaml").write_text(card)
            p = dataclasses.replace(p, hard=dataclasses.replace(p.hard, root=tmp / "hard"))
        lines: list[str] = []
        scratch = Store(tmp / "scratch.db")
        run_id = run_method(method, seed, p, _in_worker(opts, scratch, lines.append))
        row, metrics = scratch.export(run_id)
        gpus = ",".join(str(g) for g in ray.get_gpu_ids())
        row["device"] += f" · ray node {ray.util.get_node_ip_address()}" + (f" GPU {gpus}" if gpus else "")
        folder = scratch.run_dir(run_id)
        files = {f.name: f.read_bytes() for f in folder.iterdir()} if folder.is_dir() else {}
    return {"row": row, "metrics": metrics, "files": files,
            "lines": [ln for ln in lines if "reusing cached" not in ln]}


def _init(settings: RaySettings, quiet: bool):
    try:
        import ray
    except ImportError:
        raise BadInput("--backend ray: Ray is not installed (pip install -e '.[ray]'), "
                       "or use --backend local") from None
    if not ray.is_initialized():
        kw = {} if settings.address else {"include_dashboard": False}
        _reachable(settings.address)
        try:
            ray.init(address=settings.address, log_to_driver=not quiet, **kw)
        except ConnectionError as e:
            raise BadInput(f"--address {settings.address}: no Ray cluster there ({e})") from None
        except Exception as e:   # e.g. a cluster of another Ray version
            if not settings.address:
                raise
            why = (str(e).splitlines() or [""])[0]
            raise BadInput(f"--address {settings.address}: cannot connect "
                           f"({type(e).__name__}: {why})") from None
    return ray


def _reachable(address: str | None, timeout: float = 10.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) nobody listens on is refused at once: Ray itself would retry
    for minutes before giving up."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise BadInput(f"--address {address}: cannot reach {host}:{port} ({e.strerror or e})") from None


def run_ray(methods: list[str], seeds: list[int], opts: Options, skip_done: bool = False,
            settings: RaySettings = RaySettings(), bar: RunBar | None = None) -> list[str]:
    """Run methods x seeds as Ray tasks; the driver alone writes the store. Run ids in (seed, method)
    order (failed runs included), as the local backends return them; `bar` counts them."""
    check_hparams(methods, opts.hp_overrides)
    ray = _init(settings, opts.quiet)
    p = prepare_data(opts.preset, opts.datasets_dir, opts.runtime, opts.task)
    gpus = settings.gpus_per_job if settings.gpus_per_job is not None else float(opts.device.type == "cuda")
    quiet_imports = {"PYTHONWARNINGS": "ignore:pkg_resources is deprecated"}   # torchmetrics, at import
    # Ray ends a worker after one GPU task by default (max_calls=1): a CUDA context stays bound to the
    # GPU it first saw. Runs on a CPU hold GPUs only as placement (fake GPUs in the tests) and start no
    # CUDA, so their workers are kept (0: no limit) and import the harness once, not once per run.
    remote = ray.remote(num_cpus=settings.cpus_per_job, num_gpus=gpus, max_retries=0,
                        max_calls=1 if opts.device.type == "cuda" else 0,
                        runtime_env={"env_vars": quiet_imports})(_job)
    joint = any(get_method(m).start == "source_joint" for m in methods)
    todo = [(m, s) for s in seeds for m in methods]
    ids: dict[tuple[str, int], str] = {}
    runs = bar or RunBar(len(todo), "runs (ray)", disable=opts.quiet)
    if skip_done:
        for m, s in todo:
            if done := opts.store.done(run_config(m, s, p, opts)[2]):
                opts.log(f"{m} seed {s}: already finished as run {done}; skipping")
                ids[(m, s)] = done
                runs.finished()
    card_file = Path(p.hard.root or "") / "card.yaml"
    card = card_file.read_text() if p.hard.root and card_file.is_file() else None
    shipped = ray.put(p.to("cpu"))
    stage_dir = settings.stage_dir
    if stage_dir is not None:
        stage_dir.mkdir(parents=True, exist_ok=True)
    futures: dict = {}
    for s in seeds:
        if all((m, s) in ids for m in methods):
            continue
        names = _stage_folders(p, opts, s, joint)
        stages = ray.put(_pack(opts.store.cache, names, stage_dir))
        for m in methods:
            if (m, s) not in ids:
                ref = remote.remote(_travelling(opts), m, s, shipped, stages, names, card,
                                    int(settings.cpus_per_job))
                futures[ref] = (m, s)
    res = ray.cluster_resources()
    slots = res.get("CPU", 1) / max(settings.cpus_per_job, 1e-9)
    if gpus:
        slots = min(slots, res.get("GPU", 0) / gpus)
    try:
        _collect(ray, futures, ids, opts, runs, max(1, int(slots)))
    finally:
        if bar is None:
            runs.close()
    return [ids[t] for t in todo]


def _travelling(opts: Options) -> Options:
    """The run options as a worker gets them: its log lines come back with its result instead."""
    return dataclasses.replace(opts, log=print, quiet=True)


def _in_worker(opts: Options, store, log) -> Options:
    """The options a Ray job runs with. Unpickling skips `Options.__post_init__`; rebuilding them here
    runs it, which turns `--deterministic` kernels on in the worker process."""
    return dataclasses.replace(opts, store=store, log=log, quiet=True)


def _collect(ray, futures: dict, ids: dict, opts: Options, bar: RunBar, slots: int) -> None:
    """Adopt each finished run into the store as it comes back."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    say = quiet_log if opts.quiet else tqdm.write
    pending = list(futures)
    bar.running(min(slots, len(pending)))
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                out = ray.get(ready[0])
            except RayTaskError as e:
                cause = getattr(e, "cause", None)
                raise (cause if isinstance(cause, BadInput | OSError) else e) from None
            except WorkerCrashedError:
                raise RuntimeError("a Ray worker died (killed, or out of memory); the runs that finished "
                                   "are in the store: `sweep --resume` with the same arguments runs the "
                                   "rest") from None
            ids[futures[ready[0]]] = opts.store.adopt(out["row"], out["metrics"], out["files"])
            for line in out["lines"]:
                say(line)
            bar.finished(out["row"]["status"] == "failed", running=min(slots, len(pending)))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
