"""`score`: the chosen model at work - apply a stored run's lens finder to new cutouts.

A run folder keeps the final weights (`model.pt`, the headline model of the tables) and the run row
keeps what rebuilds it (backbone, catalog features, classes). Scoring streams the images in chunks
from a memory-mapped image set, so memory stays bounded by the chunk, not by the survey; each chunk
goes through the same preparation as training (centre crop, per-stamp noise-scaled asinh). The
output is one row per cutout: its id, its score (the lens probability; one column per class for
multi-class runs) and the provenance of the weights (run, method, seed, code version).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from harness.data import imageset
from harness.data.bands import check_bands, set_bands
from harness.data.features import feature_matrix
from harness.data.fields import crop_field
from harness.data.preprocess import normalise_torch, prepare
from harness.domains import model_input, verified_set
from harness.errors import BadInput
from harness.models import LensFinder
from harness.store import Store
from harness.tasks import get_task, task_of
from harness.training import Runtime


def load_model(store: Store, run_id: str, device: torch.device) -> tuple[LensFinder, dict]:
    """The run's final lens finder (eval mode) and what describes it: features, input size, provenance."""
    runs = store.runs()
    row = runs[runs["id"] == run_id]
    if row.empty:
        raise BadInput(f"--run {run_id}: no such run in {store.path}")
    row = row.iloc[0]
    if row["status"] != "ok":
        raise BadInput(f"--run {run_id}: the run {row['status']}; only finished runs have a model")
    if row["task"] == "ssl-real":
        raise BadInput(f"--run {run_id}: an ssl-real arm is five cross-validation models, "
                       "not one to score with")
    path = store.run_dir(run_id) / "model.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise BadInput(f"{path}: unreadable run model ({type(e).__name__})") from None
    state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    cfg = json.loads(row["config"])
    src, features = cfg["preset"]["source"], list(cfg["data"].get("features") or [])
    first_conv = next(v for k, v in state.items() if k.startswith("backbone") and v.ndim == 4)
    model = LensFinder(src["backbone"], int(first_conv.shape[1]), len(features),
                       int(state["head.weight"].shape[0]), use_catalog=src["use_catalog"],
                       head=src.get("head", "linear"))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise BadInput(f"{path}: weights do not match the run's recorded model") from None
    bands = cfg["data"].get("bands")   # names, where the run recorded them; else the weights' count
    info = {"features": features if model.use_catalog else [],
            "bands": bands if isinstance(bands, list) else int(first_conv.shape[1]),
            "pixel_scale": cfg["data"].get("pixel_scale"), "field": cfg["data"].get("field"),
            "size": int(cfg["preset"]["data"]["image_size"]), "run": run_id, "method": row["method"],
            "seed": int(row["seed"]), "code_version": row["code_version"], "weights": "final",
            "task": row["task"], "fov": cfg["data"].get("fov")}
    return model.to(device).eval(), info


def _check(s: imageset.ImageSet, info: dict, log) -> None:
    """Refuse what the model cannot read; warn where it reads the stamps differently from its training."""
    where, run, size = s.root or s.name, info["run"], info["size"]
    check_bands(f"run {run}'s model", info["bands"], f"{where}", set_bands(s),
                "; score stamps of the bands the model was trained on")
    if (task_of(s.meta) == "substructure") != (info["task"] == "substructure"):   # lens sets score alike
        raise BadInput(f"{where}: a {task_of(s.meta)} set, but run {run} is a {info['task']} model")
    if get_task(info["task"]).resample:   # resampled onto the run's field: pixel size is taken care of
        return
    h, w = s.images.shape[-2:]
    if min(h, w) < size:
        log(f"warning: {where}: {h}x{w} stamps are padded to the model input {size}x{size} (as `run` pads "
            "a set of small stamps)")
    ps, trained = s.meta.get("pixel_scale"), info.get("pixel_scale")
    known = all(isinstance(x, (int, float)) and x > 0 for x in (ps, trained))
    if known and abs(ps / trained - 1) > 0.05:
        learned = info.get("field") or size * trained   # runs before 2026-12-01 recorded no field
        log(f"warning: {where}: {ps:g}\"/px stamps, but run {run} trained on {trained:g}\"/px; lens finding "
            f"centre-crops without resampling, so the model sees {crop_field(s, size):.1f}\" where it "
            f"learned {learned:.1f}\"")


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A CPU tensor over `a` without a copy. Unstretched stamps (the CUDA path) can be a view of the
    read-only memory map; the tensor is only read (copied to the device), so torch's warning that it
    could write to such an array does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


@torch.no_grad()
def score_set(model: LensFinder, s: imageset.ImageSet, info: dict, rt: Runtime, chunk: int = 4096,
              batch: int = 512) -> pd.DataFrame:
    """Scores of every image of `s`, streamed `chunk` images at a time."""
    _check(s, info, rt.log)
    n = len(s)
    if missing := [c for c in info["features"] if c not in s.catalog.columns]:
        raise BadInput(f"{s.root or s.name}: run {info['run']} reads catalog columns this set lacks "
                       f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''}); score it with an "
                       "image-only run (`run --no-catalog`)")
    labels = np.zeros(n, dtype=np.int64)   # unused by feature_matrix without its leak check
    feats, _ = feature_matrix(s.catalog, labels, info["features"], check=False)
    ids = s.catalog["id"].astype(str).to_numpy() if "id" in s.catalog else np.arange(n).astype(str)
    out, task = [], get_task(info["task"])
    bar = tqdm(total=n, desc=f"score {s.name}", unit="img", disable=rt.quiet, dynamic_ncols=True)
    on_device = rt.device.type == "cuda" and task.stretch == "asinh"   # the stretch runs on the GPU
    for lo in range(0, n, chunk):
        # what the model sees (the centre crop, or the resampled field), before the stretch, which would
        # hide NaNs: a stamp with any is refused, as `run` refuses them, on either path
        raw = model_input(s, task, info["size"], info["fov"], slice(lo, lo + chunk), stretch=False)
        if on_device and raw.shape[-2:] == (info["size"],) * 2:   # small stamps: stretched, then padded
            x = _tensor(raw).to(rt.device, non_blocking=True)
            finite = bool(torch.isfinite(x).all())   # the batches below read back to the host anyway
            x = normalise_torch(x)
        else:
            finite = bool(np.isfinite(raw).all())
            x = _tensor(prepare(raw, info["size"], task.stretch))
        if not finite:
            imageset.check_finite(s)   # raises, naming how many stamps and the first id
            first = lo + int(np.flatnonzero(~np.isfinite(np.asarray(raw)).all(axis=(1, 2, 3)))[0])
            raise BadInput(f"{s.root or s.name}: stamp {ids[first]} is not finite once resampled for "
                           "the model")
        c = torch.from_numpy(feats[lo:lo + chunk])
        for b in range(0, len(x), batch):
            with rt.autocast():
                logits = model(x[b:b + batch].to(rt.device), c[b:b + batch].to(rt.device))
            out.append(logits.float().softmax(1).cpu().numpy())
        bar.update(len(x))
    bar.close()
    probs = np.concatenate(out) if out else np.zeros((0, model.num_classes))
    df = pd.DataFrame({"id": ids})
    if probs.shape[1] == 2:
        df["score"] = probs[:, 1]
    else:
        for k in range(probs.shape[1]):
            df[f"score_{k}"] = probs[:, k]
    return df.assign(**{k: info[k] for k in ("run", "method", "seed", "weights", "code_version")})


def _sets(set_dir: Path | None, images_dir: Path | None, fmt: str | None, scratch: Path, rt: Runtime,
          pixel_scale: float | None = None) -> list[imageset.ImageSet]:
    if (set_dir is None) == (images_dir is None):
        raise BadInput("give one of --set DIR (an image set) or --images DIR --format F (a real layout)")
    if set_dir is not None:
        return [verified_set(Path(set_dir))]
    if not fmt:
        raise BadInput("--images needs --format (one of the `data import` formats)")
    from harness.data.importers import import_dataset

    root = import_dataset(fmt, images_dir, "scored", scratch, progress=not rt.quiet, log=rt.log,
                          pixel_scale=pixel_scale)
    subs = [p for p in sorted(root.iterdir()) if (p / "meta.json").is_file()]
    return [imageset.load(p) for p in subs] if subs else [imageset.load(root)]


def score(store_path: Path, run_id: str, out: Path, rt: Runtime, set_dir: Path | None = None,
          images_dir: Path | None = None, fmt: str | None = None, chunk: int = 4096,
          pixel_scale: float | None = None) -> Path:
    """Score the images with the run's model and write `out` (parquet) atomically; returns `out`."""
    if not Path(store_path).is_file():
        raise BadInput(f"--store {store_path}: no such results store")
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    if out.suffix != ".parquet":
        raise BadInput(f"--out {out}: scores are written as Parquet; give a .parquet file name")
    if (set_dir is None) == (images_dir is None):
        raise BadInput("give one of --set DIR (an image set) or --images DIR --format F (a real layout)")
    model, info = load_model(Store(store_path, create=False), run_id, rt.device)
    if set_dir is not None and pixel_scale is not None:
        raise BadInput("--pixel-scale is for --images (files without a header); an image set has its own")
    with tempfile.TemporaryDirectory(prefix=".score-", dir=out.parent) as scratch:
        copy = str(Path(scratch) / "scored")   # the importer's copy: messages name the user's folder

        def say(line: str) -> None:
            if not line.startswith("imported "):   # "imported X -> <the temporary copy>"
                rt.log(line.replace(copy, str(images_dir)))
        mine = dataclasses.replace(rt, log=say)
        try:
            sets = _sets(set_dir, images_dir, fmt, Path(scratch), mine, pixel_scale)
            frames = [score_set(model, s, info, mine, chunk).assign(set=s.root.name if s.root else s.name)
                      for s in sets]
        except BadInput as e:
            raise BadInput(str(e).replace(copy, str(images_dir))) from None
        tmp = Path(scratch) / "scores.parquet"
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
        os.replace(tmp, out)
    rt.log(f"score: {sum(len(s) for s in sets)} images scored with run {run_id} ({info['method']}) -> {out}")
    return out
