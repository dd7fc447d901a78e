"""`--task` is real: runs record their data's task, mismatches are refused before anything is generated,
and the substructure (Test I) and ssl-real (Test VI) tasks run end to end, on simulated data and on
folders in the real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.cli import main
from harness.data import imageset
from harness.data.importers import import_dataset
from harness.store import Store

SMOKE = ["--preset", "smoke", "--quiet", "--device", "cpu"]


@pytest.mark.parametrize("args,needle", [
    (["--task", "substructure", "--easy", "easy"],
     "--task substructure: the easy data 'easy' are lens-finding"),
    (["--task", "lens-finding", "--hard", "substructure-b"],
     "the hard data 'substructure-b' are substructure"),
    (["--easy", "substructure-a"], "both domains must be data of one task"),
    (["--task", "ssl-real", "--hard", "hard"], "--task ssl-real: the hard data 'hard' are lens-finding"),
    (["--task", "weak-lensing"], "--task weak-lensing: unknown task"),
    (["--task", "ssl-real", "--method", "dann"], "runs its own three arms"),
])
def test_task_mismatch_refused_before_generating(tmp_path: Path, args: list[str], needle: str,
                                                 capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", *args, "--store", "s.db", "--datasets-dir", "ds", *SMOKE]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "ds").exists() and not (tmp_path / "s.db").exists()


@pytest.fixture(scope="module")
def substructure(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("substructure")
    rc = main(["run", "--task", "substructure", "--suite", "substructure",
               "--method", "source_only,dann,ssl_joint",
               "--store", str(root / "s.db"), "--datasets-dir", str(root / "ds"), *SMOKE])
    assert rc == 0
    return root


def test_substructure_smoke_records_task_and_reports_per_class(substructure: Path) -> None:
    runs = Store(substructure / "s.db").runs()
    assert set(runs["task"]) == {"substructure"} and set(runs["status"]) == {"ok"}
    pred = pd.read_parquet(substructure / runs["id"].iloc[0] / "predictions.parquet")
    assert {"score_0", "score_1", "score_2"} <= set(pred.columns)
    fov = {(c := json.loads(text))["data"]["hard"]: c["data"]["fov"] for text in runs["config"]}
    # both domains on each target's field: Model II (Euclid) and Model III (HST) of the suite
    assert fov == {"substructure-b": pytest.approx(64 * 0.101), "substructure-c": pytest.approx(64 * 0.08)}
    out = substructure / "report"
    assert main(["report", "--store", str(substructure / "s.db"), "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "| Method | macro | no | sphere | vort | micro AUC (Keras, not the headline) |" in md
    assert "Tidball et al. 2021" in md and "source-only 0.8558" in md
    assert list(out.glob("*-roc-classes.png"))
    page = (out / "index.html").read_text()   # the suite's method x card heatmap covers substructure
    assert "Shift suite · substructure · smoke" in page and (out / "substructure-smoke-suite.png").is_file()


def test_substructure_source_from_scratch_keeps_ssl_joint_its_own_start(substructure: Path) -> None:
    """The task's finder trains from scratch; ssl_joint's still starts from the encoder that saw the pool,
    so the two runs on one card (same seed, same test images) predict differently."""
    runs = Store(substructure / "s.db").runs()
    assert {json.loads(c)["preset"]["source"]["init"] for c in runs["config"]} == {"scratch"}
    card = runs[runs["config"].map(lambda c: json.loads(c)["data"]["hard"]) == "substructure-b"]
    scores = {m: pd.read_parquet(substructure / card.loc[card["method"] == m, "id"].iloc[0]
                                 / "predictions.parquet").filter(like="score_").to_numpy()
              for m in ("source_only", "ssl_joint")}
    assert scores["source_only"].shape == scores["ssl_joint"].shape
    assert np.abs(scores["source_only"] - scores["ssl_joint"]).max() > 1e-3


def test_substructure_runs_on_an_imported_deeplense_folder(substructure: Path, tmp_path: Path) -> None:
    """A held-back folder in the DeepLense class-folder layout imports and runs through --task."""
    gen = imageset.load(next((substructure / "ds").glob("substructure-b-*")))
    src = tmp_path / "model_ii" / "dataset"
    for k, name in enumerate(("no", "sphere", "vort")):
        (src / name).mkdir(parents=True)
        for i in np.flatnonzero(gen.labels == k):
            np.save(src / name / f"{name}_sim_{i}.npy", np.asarray(gen.images[i, 0]))
    (src / "no" / ".DS_Store").write_bytes(b"junk")
    out = import_dataset("deeplense-npy", src.parent, "b-real", datasets_dir=tmp_path, progress=False,
                         log=lambda m: None, pixel_scale=0.101)
    s = imageset.load(out)
    assert s.meta["kind"] == "substructure" and s.meta["classes"] == ["no", "sphere", "vort"]
    assert {"pool", "labelled", "test"} <= set(s.splits)
    rc = main(["run", "--task", "substructure", "--method", "source_only", "--hard", str(out),
               "--store", str(substructure / "s.db"), "--datasets-dir", str(substructure / "ds"), *SMOKE])
    assert rc == 0
    runs = Store(substructure / "s.db").runs()
    mine = runs[runs["config"].str.contains("b-real")]
    assert len(mine) == 1 and mine["status"].iloc[0] == "ok" and mine["task"].iloc[0] == "substructure"


def test_wrong_shape_that_empties_a_class_is_refused_naming_the_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name, shape in (("no", (40, 40)), ("sphere", (64, 64)), ("vort", (64, 64))):
        (src / name).mkdir(parents=True)
        for i in range(1 if name == "no" else 4):
            np.save(src / name / f"{name}_{i}.npy", np.zeros(shape, np.float32) + i)
    with pytest.raises(Exception, match=r"class 'no' has no usable image \(dropped: no/no_0.npy"):
        import_dataset("deeplense-npy", src, "x", datasets_dir=tmp_path / "ds", progress=False,
                       log=lambda m: None)
    assert not (tmp_path / "ds" / "x").exists()


@pytest.fixture(scope="module")
def ssl_real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sslreal")
    rc = main(["run", "--task", "ssl-real", "--store", str(root / "s.db"), "--datasets-dir", str(root / "ds"),
               *SMOKE])
    assert rc == 0
    return root


def test_ssl_real_smoke_records_three_arms_on_the_same_folds(ssl_real: Path) -> None:
    runs = Store(ssl_real / "s.db").runs()
    assert set(runs["task"]) == {"ssl-real"}
    assert dict(zip(runs["method"], runs["role"])) == {"linear_probe": "method", "finetune": "method",
                                                      "scratch": "baseline"}
    preds = [pd.read_parquet(ssl_real / r / "predictions.parquet") for r in runs["id"]]
    # every image scored by each arm
    assert all(np.array_equal(p["label"], preds[0]["label"]) for p in preds)
    assert all(p["score"].between(0, 1).all() for p in preds)
    out = ssl_real / "report"
    assert main(["report", "--store", str(ssl_real / "s.db"), "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "SSL arms beat scratch" in md and "above chance" in md and "t-interval over 5 folds" in md
    assert "‡ uses the 20% labelled hard split (ssl-real: the labels of its training folds)" in md


def test_ssl_pretraining_sees_no_labels(ssl_real: Path, tmp_path: Path) -> None:
    """Poisoning: the same images with shuffled labels give bitwise-identical pretrained weights."""
    from harness.config import get_preset
    from harness.pipeline import Options
    from harness.ssl_real import load_set, pretrain
    from harness.tasks import get_task

    gen = imageset.load(next((ssl_real / "ds").glob("hst-lenses-*")))
    states = []
    for k, labels in enumerate((gen.labels, np.random.default_rng(1).permutation(gen.labels))):
        folder = imageset.save(imageset.ImageSet(np.asarray(gen.images), gen.catalog, labels, gen.splits,
                                                 dict(gen.meta)), tmp_path / f"set{k}")
        preset = get_task("ssl-real").apply(get_preset("smoke")).replace("data", hard=str(folder))
        (tmp_path / f"store{k}").mkdir()
        opts = Options(preset=preset, store=Store(tmp_path / f"store{k}" / "s.db"),
                       device=torch.device("cpu"), quiet=True, log=lambda m: None)
        _, images, _ = load_set(opts)
        states.append(pretrain(images, opts, seed=0, key="poison"))
    a, b = states[0]["backbone"], states[1]["backbone"]
    assert not np.array_equal(gen.labels, np.random.default_rng(1).permutation(gen.labels))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ssl_encoder_cache_tells_two_draws_of_one_card_apart(ssl_real: Path) -> None:
    """Two sets of one card (same fingerprint and size, another seed or split) get their own encoders."""
    from harness.config import get_preset
    from harness.ssl_real import encoder_key

    gen = imageset.load(next((ssl_real / "ds").glob("hst-lenses-*")))
    pr = get_preset("smoke")
    other_seed = imageset.ImageSet(gen.images, gen.catalog, gen.labels, gen.splits,
                                   {**gen.meta, "seed": int(gen.meta["seed"]) + 1})
    splits = {k: v[::-1].copy() for k, v in gen.splits.items()}
    other_split = imageset.ImageSet(gen.images, gen.catalog, gen.labels, splits, dict(gen.meta))
    keys = {encoder_key(s, pr, 0, "fp32") for s in (gen, other_seed, other_split)}
    assert len(keys) == 3 and encoder_key(gen, pr, 0, "fp32") == encoder_key(gen, pr, 0, "fp32")


def test_ssl_real_runs_on_an_imported_hst_folder(ssl_real: Path, tmp_path: Path) -> None:
    """A held-back folder in the Test VI layout (single-band 334x334 with NaNs) imports and runs."""
    gen = imageset.load(next((ssl_real / "ds").glob("hst-lenses-*")))
    src = tmp_path / "hst"
    src.mkdir()
    for i, (img, y) in enumerate(zip(np.asarray(gen.images), gen.labels)):
        np.save(src / (f"nl_{i}_hst.npy" if y == 0 else f"{i}_hst.npy"), img[0])
    (src / "readme.npy").write_bytes(b"junk")
    assert np.isnan(np.asarray(gen.images)).any()
    out = import_dataset("hst-npy", src, "hst-real", datasets_dir=tmp_path, progress=False,
                         log=lambda m: None)
    rc = main(["run", "--task", "ssl-real", "--hard", str(out), "--store", str(tmp_path / "s.db"),
               "--datasets-dir", str(tmp_path), *SMOKE])
    assert rc == 0
    runs = Store(tmp_path / "s.db").runs()
    assert len(runs) == 3 and set(runs["task"]) == {"ssl-real"}
    # the same file names and sizes with other pixels: another import, so another encoder, not the cached one
    for f in src.glob("*_hst.npy"):
        np.save(f, np.load(f)[::-1].copy())
    again = import_dataset("hst-npy", src, "hst-real-2", datasets_dir=tmp_path, progress=False,
                           log=lambda m: None)
    assert imageset.load(again).fingerprint != imageset.load(out).fingerprint
    assert main(["run", "--task", "ssl-real", "--hard", str(again), "--store", str(tmp_path / "s.db"),
                 "--datasets-dir", str(tmp_path), *SMOKE]) == 0
    assert len(list((tmp_path / "cache").glob("ssl-*"))) == 2
