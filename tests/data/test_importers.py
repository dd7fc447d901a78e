"""Importers of real layouts: output shape and order, quirk accounting, splits, and refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_real import (
    HARD_CORRUPT,
    HARD_FEW_NAN,
    HARD_LABELLED,
    HARD_MOSTLY_NAN,
    HARD_NO_IMAGE,
    HARD_NO_R,
    HARD_NO_ROW,
    OFFSET,
    make_bologna,
    make_deeplense,
    make_hst,
)
from sklearn.metrics import roc_auc_score

from harness.data.features import feature_matrix
from harness.data.imageset import load
from harness.data.importers import FORMATS, format_names, import_dataset, register_format
from harness.errors import BadInput


class Log(list):
    """Collects log lines; `one(word)` is the single line mentioning `word`."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def one(self, *words: str) -> str:
        hits = [x for x in self if all(w in x for w in words)]
        assert len(hits) == 1, (words, list(self))
        return hits[0]


def run(fmt: str, src: Path, tmp_path: Path, name: str = "real", **kw) -> tuple[Path, Log]:
    log = Log()
    out = import_dataset(fmt, src, name, datasets_dir=tmp_path / "datasets", progress=False, log=log, **kw)
    return out, log


def nothing_written(tmp_path: Path) -> bool:
    d = tmp_path / "datasets"
    return not d.exists() or not any(d.iterdir())


@pytest.fixture(scope="module")
def bologna(tmp_path_factory) -> tuple[Path, Path, Log]:
    tmp = tmp_path_factory.mktemp("bologna")
    src = make_bologna(tmp / "src")
    out, log = run("bologna", src, tmp)
    return src, out, log


def ids(iset) -> list[int]:
    return [int(i) for i in iset.catalog["id"]]


# ------------------------------------------------------------------------------------------- bologna


def test_bologna_layout_shapes_and_band_order(bologna):
    _, out, _ = bologna
    assert sorted(p.name for p in out.iterdir()) == ["easy", "hard"]
    for domain in ("easy", "hard"):
        s = load(out / domain)
        assert s.images.dtype == np.float32 and s.images.shape[1:] == (3, 101, 101)
        means = np.asarray(s.images).mean(axis=(0, 2, 3))
        np.testing.assert_allclose(means, [OFFSET["g"], OFFSET["r"], OFFSET["i"]], atol=1.0)
        assert s.meta["bands"] == ["g", "r", "i"] and s.meta["pixel_scale"] == 0.2
        assert s.meta["kind"] == "lens-finding" and s.meta["domain"] == domain
        assert s.meta["classes"] == ["non-lens", "lens"] and s.meta["source_format"] == "bologna"
        assert len(s.meta["fingerprint"]) == 64
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "scratch left behind"
    assert len(load(out / "easy")) == 12


def test_bologna_catalog_columns(bologna):
    _, out, _ = bologna
    cat = load(out / "hard").catalog
    for c in ("truth_is_lens", "truth_einstein_area", "truth_numb_pix_lensed_image",
              "truth_flux_lensed_image_in_sigma", "truth_leaky_col", "mag_g", "mag_r", "mag_i", "colour_gr",
              "r_half_arcsec", "ellipticity"):
        assert c in cat.columns, c
    # a column the format does not know as an observable is kept for analysis only, never a model input
    for raw in ("ID", "is_lens", "Einstein_area", "numb_pix_lensed_image", "flux_lensed_image_in_sigma",
                "leaky_col"):
        assert raw not in cat.columns
    # measured from pixels: the g aperture magnitude follows the g offset, not the catalog
    assert (cat["mag_g"] > cat["mag_r"]).all()


def test_bologna_nan_repaired_and_dropped(bologna):
    _, out, _ = bologna
    s = load(out / "hard")
    kept = ids(s)
    assert np.isfinite(np.asarray(s.images)).all()
    assert HARD_FEW_NAN in kept
    for gone in (HARD_CORRUPT, HARD_MOSTLY_NAN, HARD_NO_R, HARD_NO_IMAGE, HARD_NO_ROW):
        assert gone not in kept
    assert len(s) == 17


def test_bologna_quirk_warnings(bologna):
    _, _, log = bologna
    assert "1 macOS" in log.one("bologna/easy", "macOS")
    assert "1 macOS" in log.one("bologna/hard", "macOS")
    bad = log.one("bologna/hard", "unreadable")
    assert f"Band2/imageSDSS_I-{HARD_CORRUPT}.fits" in bad and "1 of them labelled" in bad
    assert "repaired 1 image" in log.one("bologna/hard", "NaN pixels (set to 0)")
    assert "dropped 1 image" in log.one("bologna/hard", ">= 5% NaN")
    assert f"{HARD_NO_R} lacks r" in log.one("bologna/hard", "missing a band")
    assert "1 of them labelled" in log.one("bologna/hard", "catalog row(s) have no image")
    assert str(HARD_NO_ROW) in log.one("bologna/hard", "no catalog row")
    assert "2 labelled image(s) lost" in log.one("bologna/hard", "lost in total")
    warnings = [x for x in log if x.startswith("warning: bologna/hard")]
    kinds = [x.split(": ", 2)[2].split(" (")[0] for x in warnings]
    assert len(kinds) == len(set(kinds)), "one line per quirk kind"


def test_bologna_labels_and_hard_splits(bologna):
    _, out, _ = bologna
    s = load(out / "hard")
    kept = np.array(ids(s))
    truth = s.catalog["truth_is_lens"].to_numpy()
    np.testing.assert_array_equal(s.labels, np.where(np.isnan(truth), -1, truth).astype(int))
    pool, lab, test = (set(s.split(k).tolist()) for k in ("pool", "labelled", "test"))
    assert not (pool & lab or pool & test or lab & test)
    assert pool == set(np.flatnonzero(s.labels < 0).tolist())
    labelled_rows = set(HARD_LABELLED) - {HARD_CORRUPT}  # the labelled image lost to a corrupt FITS
    assert set(kept[sorted(lab | test)].tolist()) == labelled_rows
    assert len(pool) == 12 and lab and test
    assert sorted(s.labels[sorted(test)].tolist()) == [0, 0, 1]   # both classes held out for AUROC


def test_bologna_easy_splits(bologna):
    _, out, _ = bologna
    s = load(out / "easy")
    assert set(s.splits) == {"train", "val"}
    train, val = s.split("train"), s.split("val")
    assert len(val) == 2 and len(train) == 10 and not set(train) & set(val)
    assert sorted(s.labels[val].tolist()) == [0, 1]


def test_leak_guard_refuses_leaky_column(bologna, tmp_path):
    _, out, _ = bologna
    s = load(out / "hard")
    x, cols = feature_matrix(s.catalog, s.labels, check=False)   # the tiny fixture's mag_g separates too
    assert "leaky_col" not in cols and not [c for c in cols if c.startswith("truth_")]
    assert x.shape[0] == len(s)
    src = make_bologna(tmp_path / "src")
    with pytest.raises(BadInput, match="leaky_col.*alone separates"):
        import_dataset("bologna", src, "b", datasets_dir=tmp_path / "ds", progress=False, log=lambda m: None,
                       catalog_columns=("leaky_col",))
    assert not (tmp_path / "ds").exists()
    lines = []
    import_dataset("bologna", src, "b", datasets_dir=tmp_path / "ds", progress=False, log=lines.append,
                   catalog_columns=("leaky_col",), allow_columns=("leaky_col",))
    assert any("leaky_col' alone reaches AUROC" in ln and "allowed by --allow-column" in ln for ln in lines)
    assert "leaky_col" in load(tmp_path / "ds" / "b" / "hard").catalog.columns


def test_leak_guard_warns_above_0_95_and_refuses_a_copy_of_the_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    cat = pd.DataFrame({"copy": y.astype(float), "strong": y + rng.normal(0, 0.38, 400),
                        "weak": y + rng.normal(0, 3, 400)})
    many = (r"'copy' alone separates the labels \(AUROC 1.000 > 0.99 on 400 labelled images\); it cannot "
            r"be a model input \(name it in --allow-column if it is a genuine observable\)$")
    with pytest.raises(BadInput, match=many):
        feature_matrix(cat, y)
    with pytest.raises(BadInput, match="on 6 labelled images.*with so few, it may be chance: --no-catalog"):
        feature_matrix(cat.iloc[:6], y[:6])
    lines, near = [], {}
    feature_matrix(cat[["strong", "weak"]], y, log=lines.append, near=near)
    a = roc_auc_score(y, cat["strong"])
    assert 0.95 < a < 0.99 and len(lines) == 1 and "'strong' alone reaches AUROC" in lines[0]
    assert near == {"strong": pytest.approx(a)}   # recorded for the run's config and the report


def test_bologna_catalog_in_domain_folders_and_test_share(tmp_path):
    src = make_bologna(tmp_path / "src")
    shutil.move(src / "easy_test.csv", src / "easy" / "easy_test.csv")
    out, _ = run("bologna", src, tmp_path, test_share=0.34, seed=3)
    assert len(load(out / "easy")) == 12 and len(load(out / "hard")) == 17


def test_bologna_duplicate_ids_and_unlabelled_easy_rows(tmp_path):
    src = make_bologna(tmp_path / "src")
    csv = src / "easy_test.csv"
    cat = pd.read_csv(csv)
    cat.loc[cat["ID"] == 12, "is_lens"] = np.nan
    pd.concat([cat, cat.iloc[[0]]]).to_csv(csv, index=False)
    out, log = run("bologna", src, tmp_path)
    s = load(out / "easy")
    assert len(s) == 12 and s.labels[ids(s).index(12)] == -1
    assert s.split("pool").tolist() == [ids(s).index(12)]
    assert "dropped 1 duplicate catalog row(s) that repeat an ID with the same label" in log.one(
        "bologna/easy", "duplicate catalog row")
    assert not [ln for ln in log if "bologna/easy" in ln and "lost in total" in ln]   # no image was lost


def test_bologna_fully_labelled_hard_catalog_keeps_a_pool(tmp_path):
    """Every hard row labelled: split as a card's target (test share, 20% labelled, the rest a pool),
    not into labelled/test with an empty pool, which no method could adapt to."""
    src = make_bologna(tmp_path / "src")
    csv = src / "hard" / "hard_test_cut.csv"
    cat = pd.read_csv(csv)
    cat["is_lens"] = (cat["ID"] % 2).astype(int)
    cat.to_csv(csv, index=False)
    out, _ = run("bologna", src, tmp_path)
    s = load(out / "hard")
    sizes = {k: len(s.split(k)) for k in ("pool", "labelled", "test")}
    assert all(sizes.values()) and sum(sizes.values()) == len(s) and (s.labels >= 0).all()


def test_bologna_fits_of_every_usual_suffix(tmp_path):
    """`.fit` and fpack's `.fits.fz` are FITS too (they used to be "unrecognised")."""
    from astropy.io import fits

    src = make_bologna(tmp_path / "src")
    base, _ = run("bologna", src, tmp_path, name="base")
    for f in (src / "easy").glob("Band1/imageSDSS_R-*.fits"):
        f.rename(f.with_suffix(".fit"))
    g = next((src / "easy").glob("Band3/imageSDSS_G-1.fits"))
    data = fits.getdata(g)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="GZIP_2", quantize_level=0)]
                 ).writeto(g.with_name(g.name + ".fz"))
    g.unlink()
    out, log = run("bologna", src, tmp_path)
    a, b = (np.asarray(load(x / "easy").images) for x in (out, base))
    np.testing.assert_array_equal(a, b)   # lossless compression: the same pixels
    assert not [ln for ln in log if "unrecognised" in ln and "bologna/easy" in ln]


def test_bologna_id_header_of_any_case_keeps_long_ids_apart(tmp_path):
    """A lower-case `id` header used to be read as floats: 17-digit IDs collided as "duplicates"."""
    src = make_bologna(tmp_path / "src")
    csv = src / "easy_test.csv"
    text = csv.read_text().replace("ID,", "id,", 1)
    csv.write_text(text)
    out, _ = run("bologna", src, tmp_path)
    assert len(load(out / "easy")) == 12
    big = ["12345678901234567", "12345678901234568"]
    from harness.data.importers._bologna_catalog import read_catalog
    from harness.data.importers.quirks import Options, Quirks

    (tmp_path / "big.csv").write_text(f"id,is_lens\n{big[0]},1\n{big[1]},0\n")
    got = read_catalog(tmp_path / "big.csv", Quirks("t"), Options(0, 0.2, False, print, None))
    assert got["id"].tolist() == big


def test_bologna_duplicate_ids_with_conflicting_labels_are_refused(tmp_path):
    src = make_bologna(tmp_path / "src")
    csv = src / "easy_test.csv"
    cat = pd.read_csv(csv)
    flipped = cat.iloc[:5].assign(is_lens=1 - cat["is_lens"].iloc[:5])
    pd.concat([cat, flipped]).to_csv(csv, index=False)
    with pytest.raises(BadInput, match="5 ID.s. appear more than once with different is_lens"):
        run("bologna", src, tmp_path)
    assert nothing_written(tmp_path)


def test_bologna_bad_label_value(tmp_path):
    src = make_bologna(tmp_path / "src")
    csv = src / "easy_test.csv"
    cat = pd.read_csv(csv)
    cat.loc[0, "is_lens"] = 7
    cat.to_csv(csv, index=False)
    with pytest.raises(BadInput, match="is_lens holds '7'"):
        run("bologna", src, tmp_path)
    assert nothing_written(tmp_path)


def test_bologna_missing_band_folder(tmp_path):
    src = make_bologna(tmp_path / "src")
    shutil.rmtree(src / "hard" / "Band2")
    with pytest.raises(BadInput, match="Band2"):
        run("bologna", src, tmp_path)
    assert nothing_written(tmp_path)


def test_bologna_missing_catalog(tmp_path):
    src = make_bologna(tmp_path / "src")
    (src / "hard" / "hard_test_cut.csv").unlink()
    with pytest.raises(BadInput, match="hard_test_cut.csv"):
        run("bologna", src, tmp_path)
    assert nothing_written(tmp_path)


def test_bologna_catalog_missing_column(tmp_path):
    src = make_bologna(tmp_path / "src")
    csv = src / "easy_test.csv"
    pd.read_csv(csv).drop(columns=["is_lens"]).to_csv(csv, index=False)
    with pytest.raises(BadInput, match="is_lens"):
        run("bologna", src, tmp_path)
    assert nothing_written(tmp_path)


def test_bologna_no_usable_images(tmp_path):
    src = make_bologna(tmp_path / "src")
    for f in (src / "easy" / "Band3").glob("imageSDSS_G-*.fits"):
        f.write_bytes(b"garbage")
    with pytest.raises(BadInput, match="no usable images"):
        run("bologna", src, tmp_path)
    assert nothing_written(tmp_path)


def test_existing_output_and_unknown_format(tmp_path):
    src = make_bologna(tmp_path / "src")
    (tmp_path / "datasets" / "real").mkdir(parents=True)
    with pytest.raises(BadInput, match="already exists"):
        run("bologna", src, tmp_path)
    with pytest.raises(BadInput, match="unknown format"):
        run("fits-zoo", src, tmp_path, name="other")
    with pytest.raises(BadInput, match="not a folder"):
        run("bologna", tmp_path / "nowhere", tmp_path, name="other")


def test_formats_are_discovered_and_a_registered_format_is_dispatched(tmp_path, monkeypatch):
    assert format_names() == ["bologna", "cutouts-npy", "deeplense-npy", "hst-npy"]
    with pytest.raises(BadInput, match=r"choose from bologna, cutouts-npy, deeplense-npy, hst-npy\)$"):
        run("fits-zoo", tmp_path, tmp_path)
    seen = []

    def reader(path, name, scratch, opt):
        seen.append((path, name, opt.seed))
        raise BadInput("toy reader ran")

    monkeypatch.setitem(FORMATS, "toy", reader)  # what @register_format("toy") does
    with pytest.raises(BadInput, match="toy reader ran"):
        run("toy", tmp_path, tmp_path, seed=7)
    assert seen == [(tmp_path, "real", 7)] and nothing_written(tmp_path)
    with pytest.raises(ValueError, match="registered twice"):
        register_format("bologna")(reader)


# ----------------------------------------------------------------------------------------- deeplense


def test_deeplense_split_folders(tmp_path):
    src = make_deeplense(tmp_path / "src")
    out, log = run("deeplense-npy", src, tmp_path)
    s = load(out)
    assert s.images.dtype == np.float32 and s.images.shape == (18, 1, 150, 150)
    assert s.meta["classes"] == ["no", "sphere", "vort"] and s.meta["kind"] == "substructure"
    assert s.meta["bands"] == ["x"]
    # the class sets the image mean in the fixture: labels must follow the sorted folder names
    np.testing.assert_array_equal(np.floor(np.asarray(s.images).mean(axis=(1, 2, 3))), s.labels)
    assert set(s.splits) == {"train", "val", "pool", "labelled", "test"}
    assert len(s.split("train")) == 12 and len(s.split("val")) == 6
    # as a target: disjoint pool / labelled / test covering every image, stratified
    target = np.concatenate([s.split(k) for k in ("pool", "labelled", "test")])
    assert sorted(target.tolist()) == list(range(18))
    assert sorted(np.bincount(s.labels[s.split("test")]).tolist()) == [1, 1, 1]
    assert all(s.catalog["id"].iloc[i].startswith("val/") for i in s.split("val"))
    assert {"mag_x", "r_half_arcsec", "ellipticity"} <= set(s.catalog.columns)
    assert "1 macOS" in log.one("deeplense-npy", "macOS")
    # the files carry no scale: the one assumed is said, as a warning (it sets the substructure field)
    assert s.meta["pixel_scale"] == 0.05 and log.one("--pixel-scale").startswith("warning: ")


def test_deeplense_split_folders_as_people_name_them(tmp_path):
    """`Train/` and `validation/` are the train and val splits (they used to become two classes, or be
    skipped); class folders that differ only in case are refused, as they would shift every label."""
    src = make_deeplense(tmp_path / "src")
    (src / "train").rename(src / "Train")
    (src / "val").rename(src / "validation")
    out, _ = run("deeplense-npy", src, tmp_path)
    s = load(out)
    assert s.meta["classes"] == ["no", "sphere", "vort"] and len(s.split("train")) == 12
    assert len(s.split("val")) == 6
    (src / "validation" / "no").rename(src / "validation" / "No")
    with pytest.raises(BadInput, match="class folders No/ and no/ differ only in case"):
        run("deeplense-npy", src, tmp_path, name="again")
    (src / "validation" / "No").rename(src / "validation" / "no")
    (src / "notes").mkdir()
    with pytest.raises(BadInput, match="folder notes/ is neither a split"):
        run("deeplense-npy", src, tmp_path, name="again")


def test_deeplense_flat_classes_in_wrapper_folder(tmp_path):
    src = make_deeplense(tmp_path / "src" / "dataset", split_folders=False, size=40)
    out, log = run("deeplense-npy", src.parent, tmp_path, pixel_scale=0.101)
    assert not [x for x in log if "--pixel-scale" in x]
    s = load(out)
    assert s.images.shape == (15, 1, 40, 40)
    assert {"train", "val"} <= set(s.splits) and len(s.split("val")) == 3  # stratified 20%
    assert sorted(np.bincount(s.labels[s.split("val")]).tolist()) == [1, 1, 1]


def test_deeplense_without_classes(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(BadInput, match="class folders"):
        run("deeplense-npy", tmp_path / "src", tmp_path)
    assert nothing_written(tmp_path)


# ----------------------------------------------------------------------------------------------- hst


def test_hst(tmp_path):
    src = make_hst(tmp_path / "src")
    out, log = run("hst-npy", src, tmp_path)
    s = load(out)
    assert s.images.dtype == np.float32 and s.images.shape == (10, 3, 64, 64)
    assert s.meta["kind"] == "ssl-real" and s.meta["classes"] == ["non-lens", "lens"]
    expect = [0 if i.startswith("nl_") else 1 for i in s.catalog["id"]]
    np.testing.assert_array_equal(s.labels, expect)
    assert sorted(s.labels.tolist()) == [0] * 5 + [1] * 5
    assert np.isfinite(np.asarray(s.images)).all()
    assert set(s.splits) == {"train", "val"} and len(s.split("val")) == 2
    shape = log.one("hst-npy", "shape differs")
    assert "Lodd_hst.npy" in shape and "3x64x64" in shape and "1 of them labelled" in shape
    assert "notes.npy" in log.one("hst-npy", "unrecognised")
    assert "repaired 1" in log.one("hst-npy", "NaN")


def test_hst_names_without_case_and_nan_footprint_edges(tmp_path):
    """`NL_3_HST.npy` is a non-lens; NaN edges (as HST footprints end) are repaired up to half a stamp."""
    src = make_hst(tmp_path / "src")
    for f in src.glob("nl_*_hst.npy"):
        f.rename(f.with_name(f.name.upper().replace(".NPY", ".npy")))
    edge = np.load(src / "L1_hst.npy")
    edge[:, :, :20] = np.nan                                   # 31% of the stamp: repaired, kept
    np.save(src / "L1_hst.npy", edge)
    out, log = run("hst-npy", src, tmp_path)
    s = load(out)
    assert sorted(s.labels.tolist()) == [0] * 5 + [1] * 5
    assert all((y == 0) == i.startswith("NL_") for i, y in zip(s.catalog["id"], s.labels))
    assert "repaired 2" in log.one("hst-npy", "NaN")
    np.save(src / "L1_hst.npy", np.full((3, 64, 64), np.nan, np.float32))
    _, log = run("hst-npy", src, tmp_path, name="again")
    assert "dropped 1 image(s) with >= 50% NaN pixels" in log.one("hst-npy", ">= 50%")


def test_npy_layouts_refuse_channel_last_and_say_what_was_dropped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(4):
        np.save(src / f"{'nl_' if k % 2 else ''}{k}_hst.npy", np.random.default_rng(k).random((64, 64, 3)))
    with pytest.raises(BadInput, match="look channel-last"):
        run("hst-npy", src, tmp_path)
    for k in range(4):
        np.save(src / f"{'nl_' if k % 2 else ''}{k}_hst.npy", np.full((3, 64, 64), np.nan))
    with pytest.raises(BadInput, match=r"no usable \.npy images \(dropped 4 image\(s\) with >= 50% NaN"):
        run("hst-npy", src, tmp_path)
    assert nothing_written(tmp_path)


def test_npy_files_any_suffix_case_and_symlinked_folders(tmp_path):
    """`.NPY` files and files under a symlinked folder are stamps too (they used to vanish uncounted);
    a link back up the tree is walked once."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for k, where in enumerate((src / "a", src, elsewhere)):
        np.save(where / f"s{k}.npy", np.full((3, 16, 16), k, np.float32))
    (src / "s1.npy").rename(src / "S1.NPY")
    (src / "linked").symlink_to(elsewhere, target_is_directory=True)
    (src / "a" / "loop").symlink_to(src, target_is_directory=True)
    out, _ = run("cutouts-npy", src, tmp_path, pixel_scale=0.2)
    assert sorted(load(out).catalog["id"]) == ["S1.NPY", "a/s0.npy", "linked/s2.npy"]


def test_hst_nothing_usable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_hst.npy").write_bytes(b"not numpy")
    with pytest.raises(BadInput, match="no readable"):
        run("hst-npy", src, tmp_path)
    assert nothing_written(tmp_path)


def test_imported_leaky_column_blocks_catalog_runs_but_not_image_only(tmp_path: Path) -> None:
    """End to end: the leak guard refuses the imported set's leaky column (exit 2, nothing written);
    an image-only run (--no-catalog) on the same set is not blocked by it."""
    from harness.cli import main

    raw = make_bologna(tmp_path / "raw")
    ds = tmp_path / "ds"
    import_dataset("bologna", raw, "bolo", datasets_dir=ds, progress=False, log=lambda m: None,
                   catalog_columns=("leaky_col",), allow_columns=("leaky_col",))
    args = ["run", "--method", "source_only", "--preset", "smoke", "--easy", str(ds / "bolo" / "easy"),
            "--hard", str(ds / "bolo" / "hard"), "--quiet", "--device", "cpu"]
    assert main([*args, "--store", str(tmp_path / "a.db")]) == 2
    assert not (tmp_path / "a.db").exists()
    assert main([*args, "--store", str(tmp_path / "b.db"), "--no-catalog"]) == 0


def test_an_image_set_keeps_its_ids_as_text(tmp_path):
    """IDs such as `007` or `1e1` are names: read back as numbers they became 7 and 10.0 in scores."""
    from harness.data.imageset import ImageSet, save

    ids_in = ["007", "1e1", "12345678901234567"]
    s = ImageSet(images=np.zeros((3, 1, 8, 8), np.float32), catalog=pd.DataFrame({"id": ids_in}),
                 labels=np.array([0, 1, 0]), meta={"name": "t"})
    assert load(save(s, tmp_path / "t")).catalog["id"].tolist() == ids_in
