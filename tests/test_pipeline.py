"""End-to-end pipeline on the smoke preset: store rows, caching, honesty of the splits."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import smoke_args

from harness.cli import main
from harness.data import imageset
from harness.fs import write_checksums
from harness.store import Store


def _metrics(db: Path, run_id: str) -> dict[tuple[str, str], tuple]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT split, name, value, low, high FROM metrics WHERE run = ?",
                           (run_id,)).fetchall()
    return {(s, n): (v, lo, hi) for s, n, v, lo, hi in rows}


def test_source_only_row_has_interval_tprs_and_validators(smoke_root: Path) -> None:
    runs = Store(smoke_root / "s.db").runs()
    row = runs[runs.method == "source_only"].iloc[0]
    assert row.status == "ok" and row.task == "lens-finding" and row.preset == "smoke"
    m = _metrics(smoke_root / "s.db", row.id)
    a, lo, hi = m[("hard_test", "auroc")]
    assert 0 <= lo <= a <= hi <= 1
    for key in [("hard_test", "tpr0"), ("hard_test", "tpr10"), ("hard_pool", "im"), ("hard_pool", "snd"),
                ("easy_val", "auroc"), ("ssl", "linear_probe_auroc"), ("hard_test", "auroc_sel_validator")]:
        assert key in m and np.isfinite(m[key][0]), key
    d = smoke_root / row.id
    preds = pd.read_parquet(d / "predictions.parquet")
    assert set(preds.split) == {"hard_test", "easy_val"}
    assert preds.score.between(0, 1).all()
    assert (d / "embeddings.npz").is_file() and (d / "extremes.npz").is_file()


def test_second_run_reuses_cached_stages(smoke_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--method", "target_labelled", *smoke_args(smoke_root)]) == 0
    out = capsys.readouterr().out
    assert "ssl: reusing cached encoder" in out
    assert "source: reusing cached lens finder" in out
    runs = Store(smoke_root / "s.db").runs()
    assert set(runs.method) >= {"source_only", "target_labelled"}


def test_source_steps_set_the_source_and_oracle_budget(smoke_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(smoke_root / "cache", tmp_path / "cache")   # the preset's 40-step stage is there
    db = tmp_path / "s.db"
    assert main(["run", "--method", "oracle", "--source-steps", "2", "--preset", "smoke",
                 "--store", str(db), "--datasets-dir", str(smoke_root / "ds"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ssl: reusing cached encoder" in out and "source: trained lens finder" in out   # a new stage
    (run_id, config), = Store(db).runs()[["id", "config"]].itertuples(index=False)
    assert json.loads(config)["preset"]["source"]["steps"] == 2
    checkpoints = json.loads((tmp_path / run_id / "checkpoints.json").read_text())
    assert max(c["step"] for c in checkpoints) == 2   # the oracle trained the source's budget


def _copy_with_shuffled_test_labels(src: Path, dst: Path, seed: int) -> None:
    shutil.copytree(src, dst)
    s = imageset.load(dst)
    labels = np.array(s.labels)
    t = s.split("test")
    labels[t] = np.random.default_rng(seed).permutation(labels[t])[::-1]
    labels[t] = 1 - labels[t]  # flips every test label: any use of them would change training
    np.save(dst / "labels.npy", labels)
    write_checksums(dst)   # a deliberate edit: the set's checksums say so, or the harness refuses it


@pytest.mark.parametrize("method", ["dann", "pseudo_label_semi"])
def test_hard_test_labels_never_reach_training_or_selection(smoke_root: Path, tmp_path: Path,
                                                            method: str) -> None:
    """Training and checkpoint selection are identical when every hard-test label is flipped."""
    hard = next(p for p in (smoke_root / "ds").iterdir() if p.name.startswith("hard-"))
    easy = next(p for p in (smoke_root / "ds").iterdir() if p.name.startswith("easy-"))
    steps = {}
    for tag in ("orig", "flipped"):
        hdir = tmp_path / f"hard-{tag}"
        if tag == "orig":
            shutil.copytree(hard, hdir)
        else:
            _copy_with_shuffled_test_labels(hard, hdir, 0)
        # both stores start from the session's cached easy-only stages (they never see a hard
        # image, so flipped hard labels cannot reach them): only adaptation and selection run here
        shutil.copytree(smoke_root / "cache", tmp_path / tag / "cache")
        db = tmp_path / tag / "s.db"
        # 8 steps (two checkpoints after step 0) exercise training and selection as well as the smoke's 16
        assert main(["run", "--method", method, "--preset", "smoke", "--store", str(db), "--device",
                     "cpu", "--easy", str(easy), "--hard", str(hdir), "--quiet", "--precision", "fp32",
                     "--hp", f"{method}.steps=8"]) == 0
        run = Store(db).runs().iloc[-1]
        m = _metrics(db, run.id)
        steps[tag] = (m[("hard_test", "sel_validator_step")][0], m[("hard_test", "sel_labelled_step")][0],
                      m[("hard_pool", "im")][0], m[("easy_val", "auroc")][0])
        steps[tag + "_model"] = torch.load(tmp_path / tag / run.id / "model.pt")
    assert steps["orig"] == steps["flipped"]
    for k, v in steps["orig_model"].items():
        assert torch.equal(v, steps["flipped_model"][k]), k


def test_failed_run_is_recorded_as_failed_not_half_written(smoke_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the run folder was started leaves a 'failed' row, no metrics, no folder."""
    from harness import evaluate

    def boom(*args, **kwargs):
        raise RuntimeError("disk full while writing extremes")

    monkeypatch.setattr(evaluate, "_extremes", boom)
    shutil.copytree(smoke_root / "cache", tmp_path / "cache")   # the shared stages: only the run fails
    db = tmp_path / "f.db"
    rc = main(["run", "--method", "target_labelled", "--preset", "smoke", "--store", str(db),
               "--datasets-dir", str(smoke_root / "ds"), "--device", "cpu", "--quiet"])
    runs = Store(db).runs()
    assert rc == 1
    assert list(runs.status) == ["failed"] and "disk full" in runs.error.iloc[0]
    assert Store(db).metrics().empty
    assert [p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache"] == []


def test_bf16_and_fp32_training_agree_within_noise(smoke_root: Path, tmp_path: Path) -> None:
    """bf16 autocast must not change what is learned beyond bootstrap noise."""
    shutil.copytree(smoke_root / "cache", tmp_path / "cache")   # stages are keyed by precision: those of
    res = {}                                                     # the other precision train afresh
    for prec in ("fp32", "bf16"):
        db = tmp_path / f"{prec}.db"
        assert main(["run", "--method", "source_only", "--preset", "smoke", "--store", str(db),
                     "--datasets-dir", str(smoke_root / "ds"), "--device", "cpu", "--quiet",
                     "--precision", prec]) == 0
        run = Store(db).runs().iloc[-1]
        assert run.config and f'"precision": "{prec}"' in run.config
        res[prec] = _metrics(db, run.id)
    for split in ("easy_val", "hard_test"):
        a32, lo32, hi32 = res["fp32"][(split, "auroc")]
        a16, lo16, hi16 = res["bf16"][(split, "auroc")]
        noise = max(hi32 - lo32, hi16 - lo16) / 2
        assert abs(a32 - a16) <= noise, (split, a32, a16, noise)


def test_run_config_records_the_overrides_that_differ_outside_the_key() -> None:
    """The report tells an ablation from the default run by the recorded overrides; recording them must not
    change a run's key (stores made before keep resuming), and an override equal to the default is none."""
    from types import SimpleNamespace

    from harness.config import get_preset, stable_hash
    from harness.pipeline import run_config
    from harness.registry import get_method

    s = SimpleNamespace(meta={"shift": 1.0, "bands": ["g", "r", "i"], "pixel_scale": 0.168}, fingerprint="fp",
                        images=np.zeros((1, 3, 4, 4), np.float32))
    p = SimpleNamespace(easy=s, hard=s, columns=["a"], fov=None, padded=False, near_leaks={})
    opts = lambda over: SimpleNamespace(preset=get_preset("smoke"), precision="fp32", hp_overrides=over)
    default_lr = get_method("dann").hparams["lr"]
    _, plain, key = run_config("dann", 0, p, opts({}))
    _, same, same_key = run_config("dann", 0, p, opts({"dann": {"lr": default_lr}}))
    over = {"dann": {"lr": 0.5, "steps": 3}, "mcc": {"lr": 1.0}}
    hp, other, other_key = run_config("dann", 0, p, opts(over))
    assert "hp_overrides" not in plain and same == plain and same_key == key
    assert other["hp_overrides"] == {"lr": 0.5, "steps": 3} and hp["lr"] == 0.5
    del other["hp_overrides"]
    # what `score` checks new stamps against is recorded outside the key too
    assert other["data"].pop("bands") == ["g", "r", "i"] and other["data"].pop("pixel_scale") == 0.168
    assert other["data"].pop("field") == pytest.approx(4 * 0.168)   # 4-pixel stamps, under the input size
    assert other_key != key and other_key == stable_hash("run", "dann", 0, other)   # the same formula


def test_one_card_drawn_twice_is_two_sets_one_folder_twice_is_refused(tmp_path: Path) -> None:
    """Generated sets of one card share the card's fingerprint; with another seed or size they are other
    images, so only the same content identity (or the same folder) counts as one set given twice."""
    from harness.domains import _check_distinct
    from harness.errors import BadInput

    def made(name: str, seed: int, n: int = 4) -> imageset.ImageSet:
        (tmp_path / name).mkdir()
        return imageset.ImageSet(images=np.zeros((n, 1, 8, 8), np.float32),
                                 catalog=pd.DataFrame({"id": [f"{name}{i}" for i in range(n)]}),
                                 labels=np.zeros(n, np.int64), meta={"fingerprint": "card", "seed": seed})
    a, b, c, d = made("a", 0), made("b", 1), made("c", 0, n=5), made("d", 0)
    _check_distinct(str(tmp_path / "a"), str(tmp_path / "b"), a, b)   # another seed
    _check_distinct(str(tmp_path / "a"), str(tmp_path / "c"), a, c)   # another size
    with pytest.raises(BadInput, match="are the same image set"):
        _check_distinct(str(tmp_path / "a"), str(tmp_path / "d"), a, d)   # a copy of the same set
    with pytest.raises(BadInput, match="are the same image set"):
        _check_distinct(str(tmp_path / "a"), str(tmp_path / "a") + "/", a, a)


def test_near_leak_columns_are_recorded_outside_the_key() -> None:
    """A run records the model-input columns that came close to the leak threshold; its key is unchanged."""
    from types import SimpleNamespace

    from harness.config import get_preset, stable_hash
    from harness.pipeline import run_config

    s = SimpleNamespace(meta={"shift": 1.0}, fingerprint="fp", images=np.zeros((1, 3, 4, 4), np.float32))
    opts = SimpleNamespace(preset=get_preset("smoke"), precision="fp32", hp_overrides={})
    plain = SimpleNamespace(easy=s, hard=s, columns=["a"], fov=None, padded=False, near_leaks={})
    near = SimpleNamespace(easy=s, hard=s, columns=["a"], fov=None, padded=False, near_leaks={"a": 0.97})
    _, c0, k0 = run_config("dann", 0, plain, opts)
    _, c1, k1 = run_config("dann", 0, near, opts)
    assert "near_leaks" not in c0["data"] and c1["data"]["near_leaks"] == {"a": 0.97} and k0 == k1
    del c1["data"]["near_leaks"]
    assert c1["data"].pop("bands") == 3 and c1["data"].pop("pixel_scale") is None   # no names: a count
    assert k1 == stable_hash("run", "dann", 0, c1)


def test_very_different_fields_of_view_are_warned_about() -> None:
    """Lens finding crops without resampling: a 200-pixel stamp at 0.04"/px shows the model 2.6" where
    the source showed 10.8"; that is said (a camera-like 1.4x change is the shift itself, and is not)."""
    from types import SimpleNamespace

    from harness.data.fields import warn_fields

    def s(npix: int, ps: float) -> SimpleNamespace:
        return SimpleNamespace(meta={"pixel_scale": ps}, images=np.zeros((1, 3, npix, npix), np.float32))

    said: list[str] = []
    warn_fields(s(64, 0.168), s(90, 0.12), 64, said.append)
    assert said == []
    warn_fields(s(64, 0.168), s(200, 0.04), 64, said.append)
    assert len(said) == 1
    assert said[0].startswith("warning: the model sees 10.8\" of each easy stamp but 2.6\" of each hard one")


def test_small_stamps_mark_the_stage_and_run_keys() -> None:
    """Stamps under the model input are now stretched before padding: their stages and runs get new keys
    (so nothing trained on the old inputs is reused); sets of larger stamps keep theirs."""
    from types import SimpleNamespace

    from harness.config import get_preset
    from harness.domains import Prepared
    from harness.pipeline import run_config

    def stamps(n: int) -> SimpleNamespace:
        return SimpleNamespace(images=np.zeros((1, 3, n, n), np.float32), meta={}, fingerprint="fp")

    big, small = stamps(64), stamps(40)
    grid = SimpleNamespace(fov=None, image_size=64, easy=big, hard=small, padded=True)
    assert Prepared.padded.fget(grid) and Prepared._grid.fget(grid) == (64, "stretch, then pad")
    grid = SimpleNamespace(fov=None, image_size=64, easy=big, hard=stamps(90), padded=False)
    assert not Prepared.padded.fget(grid) and Prepared._grid.fget(grid) == (64,)
    opts = SimpleNamespace(preset=get_preset("smoke"), precision="fp32", hp_overrides={})
    keys = {}
    for padded in (False, True):
        p = SimpleNamespace(easy=big, hard=small, columns=[], fov=None, padded=padded, near_leaks={})
        _, config, keys[padded] = run_config("dann", 0, p, opts)
        assert ("small_stamps" in config["data"]) == padded
    assert keys[False] != keys[True]
