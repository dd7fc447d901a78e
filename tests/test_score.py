"""`score`: a stored run's model applied to new cutouts gives the run's own test scores back, streams
in chunks, reads real layouts through the importers, refuses wrong bands and runs, and warns where stamps
are smaller than the model input or of another pixel scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.data import imageset
from harness.store import Store
from tests.data.fixtures_real import make_bologna


def _run_and_set(root: Path) -> tuple[str, Path, pd.DataFrame]:
    runs = Store(root / "s.db").runs()
    run = runs[(runs.method == "source_only") & (runs.status == "ok")].iloc[0]
    hard = next(p for p in (root / "ds").iterdir() if p.name.startswith("hard-"))
    preds = pd.read_parquet(Store(root / "s.db").run_dir(run["id"]) / "predictions.parquet")
    return run["id"], hard, preds[preds.split == "hard_test"]


def test_score_reproduces_the_runs_test_scores_in_small_chunks(smoke_root: Path, tmp_path: Path) -> None:
    run_id, hard, test = _run_and_set(smoke_root)
    out = tmp_path / "scores.parquet"
    assert main(["score", "--run", run_id, "--set", str(hard), "--out", str(out), "--chunk", "37",
                 "--store", str(smoke_root / "s.db"), "--device", "cpu", "--quiet"]) == 0
    got = pd.read_parquet(out)
    assert len(got) == len(imageset.load(hard)) and set(got["run"]) == {run_id}
    assert {"id", "score", "method", "seed", "weights", "code_version"} <= set(got.columns)
    assert np.allclose(got["score"].to_numpy()[test["index"].to_numpy()], test["score"].to_numpy(), atol=1e-4)


def test_score_refuses_wrong_bands_and_unknown_runs(smoke_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    run_id, hard, _ = _run_and_set(smoke_root)
    s = imageset.load(hard)
    nan = np.array(s.images[:40])
    nan[37, 1, 30, 30] = np.nan   # in the second chunk of 20, where the model looks
    cases = (("two-band", np.asarray(s.images[:8, :2]), {}, "has 3 bands (g, r, i) but"),
             ("riz", np.asarray(s.images[:8]), {"bands": ["r", "i", "z"]}, "has r, i, z (other bands)"),
             ("nan", nan, {}, "1 image(s) hold NaN or infinite pixels"))
    for name, images, meta, needle in cases:
        cat = s.catalog.iloc[:len(images)].reset_index(drop=True)
        bad = imageset.save(imageset.ImageSet(images=images, catalog=cat, labels=s.labels[:len(images)],
                                              meta={"name": name, **meta}), tmp_path / name)
        out = tmp_path / f"{name}.parquet"
        assert main(["score", "--run", run_id, "--set", str(bad), "--out", str(out), "--chunk", "20",
                     "--store", str(smoke_root / "s.db"), "--quiet", "--device", "cpu"]) == 2
        assert needle in capsys.readouterr().err and not out.exists()
    assert main(["score", "--run", "nope", "--set", str(hard), "--out", str(tmp_path / "x.parquet"),
                 "--store", str(smoke_root / "s.db"), "--quiet"]) == 2
    assert "no such run" in capsys.readouterr().err


def test_small_or_coarse_stamps_score_as_run_prepares_them_with_a_warning(
        smoke_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Stamps smaller than the model input are stretched on their own pixels and padded, as `run` prepares
    a set of such stamps (so a run on 40-pixel stamps can score them); stamps of another pixel scale are
    scored (lens finding crops, it does not resample) with a warning naming both fields."""
    import torch

    from harness.domains import model_input
    from harness.score import load_model
    from harness.tasks import get_task

    run_id, hard, _ = _run_and_set(smoke_root)
    s = imageset.load(hard)
    cases = (("small", np.asarray(s.images[:8, :, :40, :40]), {}, "40x40 stamps are padded to the model"),
             ("coarse", np.asarray(s.images[:8]), {"pixel_scale": 0.5}, "model sees 32.0\" where it learned"))
    for name, images, meta, needle in cases:
        cat = s.catalog.iloc[:8].reset_index(drop=True)
        folder = imageset.save(imageset.ImageSet(images=images, catalog=cat, labels=s.labels[:8],
                                                 meta={**s.meta, "name": name, **meta}), tmp_path / name)
        out = tmp_path / f"{name}.parquet"
        assert main(["score", "--run", run_id, "--set", str(folder), "--out", str(out), "--quiet",
                     "--store", str(smoke_root / "s.db"), "--device", "cpu"]) == 0
        err = capsys.readouterr().err
        assert needle in err and err.startswith("warning: "), err
    model, info = load_model(Store(smoke_root / "s.db"), run_id, torch.device("cpu"))
    small = imageset.load(tmp_path / "small")
    x = torch.from_numpy(model_input(small, get_task("lens-finding"), 64, None))
    from harness.data.features import feature_matrix
    from harness.training import autocast_factory, resolve_precision

    feats, _ = feature_matrix(small.catalog, small.labels, info["features"], check=False)
    cpu = torch.device("cpu")
    with torch.no_grad(), autocast_factory(cpu, resolve_precision(cpu))():   # as score: bf16 where native
        want = model(x, torch.from_numpy(feats)).float().softmax(1)[:, 1].numpy()
    assert np.allclose(pd.read_parquet(tmp_path / "small.parquet")["score"], want, atol=1e-5)


def test_score_reads_a_real_layout_through_the_importers(smoke_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    # an image-only run, so a real catalog without the simulator's columns can still be scored
    db = tmp_path / "s.db"
    assert main(["run", "--method", "source_only", "--preset", "smoke", "--no-catalog", "--quiet",
                 "--store", str(db), "--datasets-dir", str(smoke_root / "ds"), "--device", "cpu"]) == 0
    image_only = Store(db).runs().iloc[-1]["id"]
    out = tmp_path / "real.parquet"
    assert main(["score", "--run", image_only, "--images", str(make_bologna(tmp_path / "bologna")),
                 "--format", "bologna", "--out", str(out), "--store", str(db), "--device", "cpu",
                 "--quiet"]) == 0
    got = pd.read_parquet(out)
    assert set(got["set"]) == {"easy", "hard"} and got["score"].between(0, 1).all()
    assert not any(p.name.startswith(".score-") for p in tmp_path.iterdir())

    # unlabelled survey stamps, one .npy file each: the same images score as they do from their set
    hard = next(p for p in (smoke_root / "ds").iterdir() if p.name.startswith("hard-"))
    stamps = np.asarray(imageset.load(hard).images[:12])
    (tmp_path / "survey" / "tile1").mkdir(parents=True)
    for k, x in enumerate(stamps):
        np.save(tmp_path / "survey" / ("tile1" if k % 2 else "") / f"c{k:02d}.npy", x)
    (tmp_path / "survey" / "notes.npy").write_bytes(b"not an array")   # skipped and counted
    args = ["--run", image_only, "--store", str(db), "--device", "cpu", "--quiet"]
    survey, from_set = tmp_path / "survey.parquet", tmp_path / "from_set.parquet"
    assert main(["score", "--images", str(tmp_path / "survey"), "--format", "cutouts-npy",
                 "--pixel-scale", "0.2", "--out", str(survey), *args]) == 0
    err = capsys.readouterr().err   # the warnings name the user's folder, never the temporary import
    assert f"warning: {tmp_path / 'survey'}: 0.2\"/px stamps, but run" in err and ".score-" not in err
    assert main(["score", "--set", str(hard), "--out", str(from_set), *args]) == 0
    a = pd.read_parquet(survey).set_index("id")["score"]
    names = [("tile1/" if k % 2 else "") + f"c{k:02d}.npy" for k in range(12)]
    assert sorted(a.index) == sorted(names)
    b = pd.read_parquet(from_set)["score"].to_numpy()[:12]
    assert np.allclose(a.loc[names].to_numpy(), b, atol=1e-4)   # batches differ: bf16 CPUs may round apart
    assert main(["score", "--images", str(tmp_path / "survey"), "--format", "cutouts-npy",
                 "--out", str(tmp_path / "x.parquet"), *args]) == 2   # no pixel scale: refused
    for k, name in enumerate(names):   # channel-last, as many surveys write them
        np.save(tmp_path / "survey" / name, stamps[k].transpose(1, 2, 0))
    assert main(["score", "--images", str(tmp_path / "survey"), "--format", "cutouts-npy", "--pixel-scale",
                 "0.2", "--out", str(tmp_path / "x.parquet"), *args]) == 2
    assert "look channel-last" in capsys.readouterr().err
