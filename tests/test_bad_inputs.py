"""The bad-input catalogue: every entry is refused with exit 2 and one line naming the file, key or flag
and what is wrong; no traceback, and nothing written to the store, `datasets/` or the output folder.

Each case builds its inputs under `in/` (not part of the check), snapshots the whole folder, runs the
CLI in-process from that folder (so default outputs would land in it) and compares the snapshot.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.data.cards import CARDS_DIR
from harness.store import SCHEMA_VERSION, Store
from tests.data.fixtures_real import make_bologna, make_deeplense, make_hst

Setup = Callable[[Path], list[str]]
CASES: list[tuple[str, Setup, str]] = []


def case(needle: str) -> Callable[[Setup], Setup]:
    """Register a catalogue entry: its setup returns the argv; `needle` must appear in the one line."""
    def deco(f: Setup) -> Setup:
        CASES.append((f.__name__, f, needle))
        return f
    return deco


def _card(tmp: Path, edit: Callable[[dict], None], base: str = "easy") -> Path:
    data = yaml.safe_load((CARDS_DIR / f"{base}.yaml").read_text())
    edit(data)
    p = tmp / "in" / "card.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(data))
    return p


def _gen(card: Path) -> list[str]:
    return ["data", "generate", "--card", str(card), "--n", "4", "--out", "out/set", "--quiet"]


def _text_card(tmp: Path, text: str | bytes) -> list[str]:
    p = tmp / "in" / "card.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return _gen(p)


# --- cards -------------------------------------------------------------------------------------------
@case("not a text file")
def card_of_random_bytes(tmp: Path) -> list[str]:
    return _text_card(tmp, np.random.default_rng(0).bytes(300) + b"\xff\xfe")


@case("unknown key 'instrument.pixel_scal'; did you mean 'instrument.pixel_scale'")
def card_with_a_misspelt_extra_key(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["instrument"].update(pixel_scal=0.2)))


@case("unknown key 'seeing'")
def card_with_an_unknown_top_level_key(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d.update(seeing=1.0)))


@case("'instrument.band.r.fwhm' = -0.5 is out of range")
def card_with_negative_seeing(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["instrument"]["band"]["r"].update(fwhm=-0.5)))


@case("'population.lens_fraction' must be above 0 and below 1")
def card_with_no_lenses(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["population"].update(lens_fraction=0.0), base="hard"))


@case("'instrument.coadd_years' = 1 is out of range [2, 6]")
def euclid_card_with_one_year_of_coadd(tmp: Path) -> list[str]:
    # lenstronomy's Euclid configuration knows 2 to 6 years: refused on load, not deep in generation
    return _gen(_card(tmp, lambda d: d["instrument"].update(coadd_years=1), base="substructure-b"))


@case("'population.lens_fraction' = 1.5 is out of range")
def card_with_a_fraction_above_one(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["population"].update(lens_fraction=1.5)))


@case("'splits.labelled_frac' = -0.1 is out of range")
def card_with_a_negative_split_fraction(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["splits"].update(labelled_frac=-0.1), base="hard"))


@case("'instrument.pixel_scale' must be a number")
def card_with_nan(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["instrument"].update(pixel_scale=float("nan"))))


@case("'instrument.npix' must be an integer")
def card_with_text_for_a_number(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["instrument"].update(npix="sixty")))


@case("missing key 'population")
def card_missing_a_section(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d.pop("population")))


@case("key 'population' appears twice")
def card_with_a_duplicated_key(tmp: Path) -> list[str]:
    text = (CARDS_DIR / "easy.yaml").read_text()
    return _text_card(tmp, text + "population:\n  lens_fraction: 0.9\n")


@case("--hard easy: not a target-domain card")
def source_card_as_the_target(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--hard", "easy"]


@case("--easy hard: not a source-domain card")
def target_card_as_the_source(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--easy", "hard"]


@case("malformed YAML")
def card_of_malformed_yaml(tmp: Path) -> list[str]:
    return _text_card(tmp, "instrument: [unclosed\n")


@case("a card must be a YAML mapping")
def card_that_is_a_list(tmp: Path) -> list[str]:
    return _text_card(tmp, "- easy\n- hard\n")


@case("a card must be a YAML mapping")
def card_that_is_empty(tmp: Path) -> list[str]:
    return _text_card(tmp, "")


@case("key 'shift' must be a number in [0, 1]")
def shift_card_out_of_range(tmp: Path) -> list[str]:
    return _text_card(tmp, "base: easy\ntarget: hard\nshift: 1.5\n")


@case("'set.population.lens_fractoin' is not a key of the base card")
def derived_card_setting_an_unknown_key(tmp: Path) -> list[str]:
    return _text_card(tmp, "base: hard\nset:\n  population.lens_fractoin: 0.5\n")


@case("'population.class_fractions' must be three fractions")
def substructure_card_fractions_not_summing_to_one(tmp: Path) -> list[str]:
    return _gen(_card(tmp, lambda d: d["population"].update(class_fractions=[0.5, 0.5, 0.5]),
                      base="substructure-a"))


@case("card file not found")
def card_path_that_does_not_exist(tmp: Path) -> list[str]:
    return _gen(tmp / "in" / "nope.yaml")


@case("unknown card 'medium'")
def card_name_unknown(tmp: Path) -> list[str]:
    return ["data", "generate", "--card", "medium", "--n", "4"]


# --- flags -------------------------------------------------------------------------------------------
@case("unknown method 'nope'")
def unknown_method(tmp: Path) -> list[str]:
    return ["run", "--method", "nope", "--preset", "smoke"]


@case("--backbone vit: choose from")
def unknown_backbone(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--backbone", "vit"]


@case("unknown preset 'huge'")
def unknown_preset(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "huge"]


@case("--task weak-lensing: unknown task")
def unknown_task(tmp: Path) -> list[str]:
    return ["run", "--task", "weak-lensing", "--preset", "smoke"]


@case("--format hdf5: unknown format")
def unknown_import_format(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    return ["data", "import", "--format", "hdf5", str(tmp / "in"), "--name", "x"]


@case("--device tpu")
def unknown_device(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--device", "tpu"]


@case("--precision fp8")
def unknown_precision(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--precision", "fp8"]


@case("unknown hyper-parameter")
def unknown_hyper_parameter(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.nope=1"]


@case("expected a finite float")
def nan_hyper_parameter(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.lr=nan"]


@case("--hp dann.lr=-0.001: must be > 0")
def negative_learning_rate(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.lr=-0.001"]


@case("--hp dann.lr=0: must be > 0")
def zero_learning_rate(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.lr=0"]


@case("--hp dann.momentum=5: must be in [0, 1)")
def momentum_that_makes_sgd_diverge(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.momentum=5"]


@case("unknown method 'nosuch'")
def hyper_parameter_of_no_method(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "nosuch.lr=1"]


@case("source_only takes no hyper-parameters")
def hyper_parameter_of_a_method_without_any(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--hp", "source_only.lr=1"]


@case("in/missing: no such image-set folder or card file")
def hard_folder_that_does_not_exist(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--hard", "in/missing"]


@case("--hp dann.momentum=0: Nesterov momentum needs momentum > 0")
def nesterov_without_momentum(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.momentum=0"]


@case("not part of this run")
def hyper_parameter_of_another_method(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "mcc.lr=1"]


@case("expected a finite float")
def text_hyper_parameter(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.lr=abc"]


@case("must be > 0")
def zero_images(tmp: Path) -> list[str]:
    return ["data", "generate", "--card", "easy", "--n", "0"]


@case("positive number of jobs")
def jobs_not_a_number(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--jobs", "many"]


@case("--source-steps: must be > 0")
def zero_source_steps(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--source-steps", "0"]


@case("--seeds -1: a seed must be in [0, 2**32)")
def negative_seed(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--seeds=-1"]


@case("--seeds 99999999999999999999: a seed must be in [0, 2**32)")
def seed_beyond_numpy(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--seeds", "99999999999999999999"]


@case("--seeds gives seed 0 twice")
def repeated_seed(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--seeds", "0,1,0"]


@case("--address 127.0.0.1:1: cannot reach 127.0.0.1:1")
def ray_cluster_nobody_runs(tmp: Path) -> list[str]:
    return ["sweep", "--backend", "ray", "--address", "127.0.0.1:1", "--method", "source_only", "--preset",
            "smoke", "--quiet"]


@case("--seeds takes")
def seeds_not_integers(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--seeds", "a,b"]


@case("positive number of jobs")
def zero_jobs(tmp: Path) -> list[str]:
    return ["run", "--method", "dann", "--preset", "smoke", "--jobs", "0"]


@case("--suite everything")
def unknown_suite(tmp: Path) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--suite", "everything"]


@case("--task ssl-real runs its own three arms")
def ssl_real_with_a_method(tmp: Path) -> list[str]:
    return ["run", "--task", "ssl-real", "--method", "dann", "--preset", "smoke"]


# --- imports -----------------------------------------------------------------------------------------
def _import(fmt: str, src: Path, *extra: str) -> list[str]:
    return ["data", "import", "--format", fmt, str(src), "--name", "x", "--quiet", *extra]


@case("no.npy")
def deeplense_class_whose_only_image_has_the_wrong_shape(tmp: Path) -> list[str]:
    src = make_deeplense(tmp / "in" / "dl", split_folders=False)
    for f in (src / "no").glob("*.npy"):
        f.unlink()
    np.save(src / "no" / "no.npy", np.zeros((7, 7), np.float32))
    return _import("deeplense-npy", src)


@case("only.npy")
def deeplense_class_whose_only_file_is_truncated(tmp: Path) -> list[str]:
    src = make_deeplense(tmp / "in" / "dl", split_folders=False)
    for f in (src / "vort").glob("*.npy"):
        f.unlink()
    np.save(src / "vort" / "only.npy", np.zeros((150, 150), np.float32))
    (src / "vort" / "only.npy").write_bytes((src / "vort" / "only.npy").read_bytes()[:200])
    return _import("deeplense-npy", src)


@case("text.npy")
def deeplense_class_of_text_arrays(tmp: Path) -> list[str]:
    src = make_deeplense(tmp / "in" / "dl", split_folders=False)
    for f in (src / "sphere").glob("*.npy"):
        f.unlink()
    np.save(src / "sphere" / "text.npy", np.array([["a"] * 150] * 150))
    return _import("deeplense-npy", src)


@case("too few")
def deeplense_with_one_image_per_class(tmp: Path) -> list[str]:
    src = make_deeplense(tmp / "in" / "dl", split_folders=False)
    for cls in ("no", "sphere", "vort"):
        for f in sorted((src / cls).glob("[0-9]*.npy"))[1:]:
            f.unlink()
    return _import("deeplense-npy", src)


@case("no usable .npy images")
def hst_all_nan(tmp: Path) -> list[str]:
    src = tmp / "in" / "hst"
    src.mkdir(parents=True)
    for k in range(4):
        np.save(src / f"L{k}_hst.npy", np.full((3, 64, 64), np.nan, np.float32))
        np.save(src / f"nl_{k}_hst.npy", np.full((3, 64, 64), np.nan, np.float32))
    return _import("hst-npy", src)


@case("no usable images")
def bologna_with_every_hard_image_corrupt(tmp: Path) -> list[str]:
    src = make_bologna(tmp / "in" / "b")
    for f in (src / "hard").rglob("*.fits"):
        f.write_bytes(b"SIMPLE  =   garbage")
    return _import("bologna", src)


@case("lacks column(s) id")
def bologna_catalog_without_ids(tmp: Path) -> list[str]:
    src = make_bologna(tmp / "in" / "b")
    cat = pd.read_csv(src / "easy_test.csv")
    cat.drop(columns=["ID"]).to_csv(src / "easy_test.csv", index=False)
    return _import("bologna", src)


@case("appear more than once with different is_lens")
def bologna_duplicate_ids_with_conflicting_labels(tmp: Path) -> list[str]:
    src = make_bologna(tmp / "in" / "b")
    cat = pd.read_csv(src / "easy_test.csv")
    flipped = cat.iloc[:5].assign(is_lens=1 - cat["is_lens"].iloc[:5])
    pd.concat([cat, flipped]).to_csv(src / "easy_test.csv", index=False)
    return _import("bologna", src)


@case("is_lens holds '2'")
def bologna_label_outside_the_class_set(tmp: Path) -> list[str]:
    src = make_bologna(tmp / "in" / "b")
    cat = pd.read_csv(src / "easy_test.csv")
    cat.loc[0, "is_lens"] = 2
    cat.to_csv(src / "easy_test.csv", index=False)
    return _import("bologna", src)


@case("no labelled rows")
def bologna_hard_set_with_no_labels(tmp: Path) -> list[str]:
    src = make_bologna(tmp / "in" / "b")
    cat = pd.read_csv(src / "hard" / "hard_test_cut.csv")
    cat["is_lens"] = np.nan
    cat.to_csv(src / "hard" / "hard_test_cut.csv", index=False)
    return _import("bologna", src)


@case("unreadable catalog")
def bologna_catalog_of_binary_junk(tmp: Path) -> list[str]:
    src = make_bologna(tmp / "in" / "b")
    (src / "easy_test.csv").write_bytes(b"\x00\xff\xfe" * 50)
    return _import("bologna", src)


@case("--catalog-columns colour: ")
def catalog_column_not_in_the_csv(tmp: Path) -> list[str]:
    return _import("bologna", make_bologna(tmp / "in" / "b"), "--catalog-columns", "colour")


@case("leak guard: catalog column 'leaky_col' alone separates")
def catalog_column_equal_to_the_label(tmp: Path) -> list[str]:
    return _import("bologna", make_bologna(tmp / "in" / "b"), "--catalog-columns", "leaky_col")


@case("--catalog-columns: the hst-npy layout has no catalog")
def catalog_columns_for_a_layout_without_catalog(tmp: Path) -> list[str]:
    return _import("hst-npy", make_hst(tmp / "in" / "hst"), "--catalog-columns", "mag")


@case("not a folder")
def import_from_a_missing_folder(tmp: Path) -> list[str]:
    return _import("hst-npy", tmp / "in" / "nowhere")


@case("must be a plain folder name")
def import_name_with_a_path(tmp: Path) -> list[str]:
    return ["data", "import", "--format", "hst-npy", str(make_hst(tmp / "in" / "hst")), "--name", "../up"]


@case("no_such_dir: no such image-set folder")
def show_a_missing_folder(tmp: Path) -> list[str]:
    return ["data", "show", "no_such_dir", "--out", "sheet.png"]


@case("missing (not a complete image set)")
def show_a_folder_that_is_not_a_set(tmp: Path) -> list[str]:
    (tmp / "in" / "empty").mkdir(parents=True)
    return ["data", "show", str(tmp / "in" / "empty"), "--out", "sheet.png"]


# --- runs on imported sets ---------------------------------------------------------------------------
def _bologna_sets(tmp: Path) -> tuple[Path, Path]:
    from harness.data.importers import import_dataset

    ds = tmp / "in" / "ds"
    import_dataset("bologna", make_bologna(tmp / "in" / "b"), "b", datasets_dir=ds, progress=False,
                   log=lambda m: None)
    return ds / "b" / "easy", ds / "b" / "hard"


def _run_on(easy: Path, hard: Path, *extra: str) -> list[str]:
    return ["run", "--method", "source_only", "--preset", "smoke", "--easy", str(easy), "--hard", str(hard),
            "--device", "cpu", "--quiet", *extra]


def _riz(d: dict) -> None:
    """The hard card seen through r, i, z: g's settings kept for z (only the names matter here)."""
    d["instrument"]["bands"] = ["r", "i", "z"]
    d["instrument"]["band"]["z"] = d["instrument"]["band"].pop("g")


@case("--easy easy has bands g, r, i but --hard")
def target_card_of_other_bands(tmp: Path) -> list[str]:
    # channels are matched by position: g would meet r; refused before either set is generated
    return ["run", "--method", "source_only", "--preset", "smoke", "--hard", str(_card(tmp, _riz, "hard")),
            "--device", "cpu", "--quiet"]


@case("--allow-column nope: not an observable catalog column")
def allow_column_that_is_not_a_column(tmp: Path) -> list[str]:
    return _run_on(*_bologna_sets(tmp), "--allow-column", "nope")


@case("are lens-finding data, not substructure")
def task_mismatch(tmp: Path) -> list[str]:
    return _run_on(*_bologna_sets(tmp), "--task", "substructure")


@case("are the same image set: the source model would train on the hard test images")
def one_folder_as_both_domains(tmp: Path) -> list[str]:
    easy, _ = _bologna_sets(tmp)
    return _run_on(easy, easy)


@case("images.npy does not match its checksum (SHA256SUMS): the set changed after it was written")
def imported_set_with_a_flipped_byte(tmp: Path) -> list[str]:
    easy, hard = _bologna_sets(tmp)
    with open(hard / "images.npy", "r+b") as f:   # an imported set cannot be rebuilt: refused, not used
        f.seek(-5, os.SEEK_END)
        b = f.read(1)
        f.seek(-5, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))
    return _run_on(easy, hard)


@case("no split 'pool' (has: all)")
def unlabelled_cutouts_as_a_target_domain(tmp: Path) -> list[str]:
    from harness.data.importers import import_dataset

    (tmp / "in" / "stamps").mkdir(parents=True)
    for k in range(4):
        np.save(tmp / "in" / "stamps" / f"{k}.npy", np.random.default_rng(k).random((3, 64, 64), np.float32))
    import_dataset("cutouts-npy", tmp / "in" / "stamps", "survey", datasets_dir=tmp / "in" / "ds",
                   progress=False, log=lambda m: None, pixel_scale=0.2)
    return _run_on(_bologna_sets(tmp)[0], tmp / "in" / "ds" / "survey")


@case("hard: its labelled split is empty (a domain needs images in pool, labelled, test)")
def hard_set_whose_labelled_split_is_empty(tmp: Path) -> list[str]:
    easy, hard = _bologna_sets(tmp)
    np.save(hard / "splits" / "labelled.npy", np.array([], np.int64))
    _rewrite_sums(hard)
    return _run_on(easy, hard)


@case("hard: its pool split is empty")
def hard_set_whose_pool_is_empty(tmp: Path) -> list[str]:
    # it used to crash in the first checkpoint's inference (torch.cat of no batches)
    easy, hard = _bologna_sets(tmp)
    np.save(hard / "splits" / "pool.npy", np.array([], np.int64))
    _rewrite_sums(hard)
    return _run_on(easy, hard)


@case("the hard test split needs labels of at least two classes")
def hard_test_split_of_one_class(tmp: Path) -> list[str]:
    easy, hard = _bologna_sets(tmp)
    labels, test = np.load(hard / "labels.npy"), np.load(hard / "splits" / "test.npy")
    np.save(hard / "splits" / "test.npy", test[labels[test] == 0])
    _rewrite_sums(hard)
    return _run_on(easy, hard, "--no-catalog")


@case("images must be (N, C, H, W)")
def image_set_with_wrong_shaped_images(tmp: Path) -> list[str]:
    easy, hard = _bologna_sets(tmp)
    np.save(hard / "images.npy", np.zeros((3, 3), np.float32))
    _rewrite_sums(hard)
    return _run_on(easy, hard)


@case("NaN")
def image_set_with_nan_pixels(tmp: Path) -> list[str]:
    easy, hard = _bologna_sets(tmp)
    x = np.load(hard / "images.npy")
    x[:] = np.nan
    np.save(hard / "images.npy", x)
    _rewrite_sums(hard)
    return _run_on(easy, hard, "--no-catalog")


def _rewrite_sums(folder: Path) -> None:
    from harness.fs import write_checksums

    write_checksums(folder)


# --- stores ------------------------------------------------------------------------------------------
@case("not a readable results store")
def corrupt_sqlite_file(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(parents=True)
    (tmp / "in" / "s.db").write_bytes(b"SQLite format 3\x00" + b"\x13" * 2000)
    return ["report", "--store", str(tmp / "in" / "s.db"), "--out", "rep"]


@case(f"written by a newer harness (schema version {SCHEMA_VERSION + 1}")
def store_of_a_newer_schema(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(parents=True)
    Store(tmp / "in" / "s.db")
    with closing(sqlite3.connect(tmp / "in" / "s.db")) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    return ["run", "--method", "source_only", "--preset", "smoke", "--store", str(tmp / "in" / "s.db")]


@case("is a folder, not a results store")
def store_that_is_a_folder(tmp: Path) -> list[str]:
    (tmp / "in" / "s.db").mkdir(parents=True)
    return ["run", "--method", "source_only", "--preset", "smoke", "--store", str(tmp / "in" / "s.db")]


@case("holds files a report does not write (notes.txt, sub)")
def report_over_a_folder_of_other_files(tmp: Path) -> list[str]:
    (tmp / "in" / "precious" / "sub").mkdir(parents=True)
    (tmp / "in" / "precious" / "notes.txt").write_text("keep")
    return ["report", "--store", "no_such.db", "--out", str(tmp / "in" / "precious")]


@case("is a file, not a folder")
def report_onto_a_file(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(parents=True)
    (tmp / "in" / "scores.parquet").write_bytes(b"x")
    return ["report", "--store", "no_such.db", "--out", str(tmp / "in" / "scores.parquet")]


@case("no such results store")
def report_on_a_missing_store(tmp: Path) -> list[str]:
    return ["report", "--store", "no_such.db", "--out", "rep"]


@case("give one of --set DIR")
def score_with_neither_set_nor_images(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(parents=True)
    Store(tmp / "in" / "s.db")
    return ["score", "--run", "r1", "--store", str(tmp / "in" / "s.db"), "--out", "scores.parquet"]


@case("r1")
def score_an_unknown_run(tmp: Path) -> list[str]:
    src = make_hst(tmp / "in" / "hst")
    Store(tmp / "in" / "s.db")
    return ["score", "--run", "r1", "--store", str(tmp / "in" / "s.db"), "--images", str(src),
            "--format", "hst-npy", "--out", "scores.parquet"]


@case("give a .parquet file name")
def score_to_a_csv_name(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(parents=True)
    Store(tmp / "in" / "s.db")
    return ["score", "--run", "r1", "--store", str(tmp / "in" / "s.db"), "--set", str(tmp / "in"),
            "--out", "scores.csv"]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path, and each file's size and mtime (a folder's mtime moves with SQLite's transient files)."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file()
            else (0, 0) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name,setup,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name: str, setup: Setup, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:   # argparse's own refusals exit from inside the parser
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before, "something was written"


def test_the_catalogue_is_at_least_forty_entries() -> None:
    assert len(CASES) >= 40


def test_read_only_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """As a user who may not write the store (access is patched: tests may run as root, who may write
    anything)."""
    Store(tmp_path / "s.db")
    before = _snapshot(tmp_path)
    real = os.access
    monkeypatch.setattr("harness.store.os.access",
                        lambda p, mode: False if Path(p) in (tmp_path, tmp_path / "s.db") else real(p, mode))
    assert main(["run", "--method", "source_only", "--preset", "smoke", "--store", str(tmp_path / "s.db"),
                 "--datasets-dir", str(tmp_path / "ds")]) == 2
    assert "read-only" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_full_disk_while_writing_a_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A writer that fails with ENOSPC half-way: one line, exit 2, and the half-written folder is gone."""
    calls = []

    def full(path, arr, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return np.lib.format.write_array(open(path, "wb"), np.asanyarray(arr))

    monkeypatch.setattr("harness.data.imageset.np.save", full)
    assert main(["data", "generate", "--card", "easy", "--n", "4", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_full_disk_on_a_tiny_tmpfs(tmp_path: Path, capsys) -> None:
    """The same on a real 64 KiB tmpfs, where the machine lets us mount one."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN)")
    try:
        assert main(["data", "generate", "--card", "easy", "--n", "8", "--out", str(mnt / "out"),
                     "--quiet"]) == 2
        assert "the disk is full" in capsys.readouterr().err
        assert list(mnt.iterdir()) == []
    finally:
        os.system(f"umount {mnt}")
        shutil.rmtree(mnt, ignore_errors=True)
