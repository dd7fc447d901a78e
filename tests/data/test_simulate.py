"""Simulator, cards and contact sheets: determinism, splits, errors, interpolation."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.data import imageset
from harness.data.cards import CARDS_DIR, load_card
from harness.data.show import contact_sheet
from harness.data.simulate import generate, simulate_arrays
from harness.errors import BadInput


def _digest(images: np.ndarray, catalog, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(catalog.to_csv(index=False).encode())
    h.update(labels.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def hard():
    return load_card("hard")


@pytest.fixture(scope="module")
def easy():
    return load_card("easy")


def test_shapes_dtypes_and_columns(hard):
    images, cat, labels = simulate_arrays(hard, 20, seed=1, progress=False)
    assert images.shape == (20, 3, 64, 64) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1}
    assert np.isfinite(images).all()
    assert cat["id"].is_unique and len(cat) == 20
    for c in ("mag_g", "mag_r", "mag_i", "colour_gr", "colour_ri", "r_half_arcsec", "ellipticity"):
        assert c in cat.columns
    for c in ("truth_is_lens", "truth_theta_E", "truth_n_lensed_pix", "truth_source_mag", "truth_lens_mag",
              "truth_psf_fwhm_g", "truth_psf_fwhm_r", "truth_psf_fwhm_i", "truth_hard_negative",
              "truth_lens_model"):
        assert c in cat.columns
    observables = {"id", "mag_g", "mag_r", "mag_i", "colour_gr", "colour_ri", "r_half_arcsec", "ellipticity"}
    assert all(c.startswith("truth_") for c in set(cat.columns) - observables)
    np.testing.assert_array_equal(cat["truth_is_lens"].to_numpy(), labels)
    assert (cat.loc[labels == 0, "truth_n_lensed_pix"] == 0).all()
    assert (cat.loc[labels == 1, "truth_theta_E"] > 0).all()


def test_deterministic_and_independent_of_workers(hard):
    a = simulate_arrays(hard, 40, seed=3, workers=1, progress=False)
    b = simulate_arrays(hard, 40, seed=3, workers=1, progress=False)
    c = simulate_arrays(hard, 40, seed=3, workers=2, progress=False)
    assert _digest(*a) == _digest(*b) == _digest(*c)


def test_different_seeds_differ(easy):
    a = simulate_arrays(easy, 16, seed=0, progress=False)
    b = simulate_arrays(easy, 16, seed=1, progress=False)
    assert not np.array_equal(a[0], b[0])


def test_generate_writes_set_with_hard_splits(hard, tmp_path):
    out = generate(hard, 50, seed=0, out=tmp_path / "h", progress=False)
    s = imageset.load(out)
    assert set(s.splits) == {"pool", "labelled", "test"}
    sp = [set(s.splits[k].tolist()) for k in ("pool", "labelled", "test")]
    assert not (sp[0] & sp[1] or sp[0] & sp[2] or sp[1] & sp[2])
    assert set().union(*sp) == set(range(50))
    assert abs(len(s.splits["labelled"]) - 10) <= 1
    assert s.meta["fingerprint"] == hard.fingerprint and s.meta["domain"] == "hard"
    assert s.meta["classes"] == ["non-lens", "lens"] and s.meta["seed"] == 0
    assert (out / "card.yaml").read_text() == hard.text
    before = (out / "images.npy").read_bytes()
    generate(hard, 50, seed=0, out=out, progress=False)  # the same set again: regenerated, same bytes
    assert (out / "images.npy").read_bytes() == before
    with pytest.raises(BadInput, match="already exists"):
        generate(hard, 50, seed=1, out=out, progress=False)  # a different set never replaces it silently
    assert (out / "images.npy").read_bytes() == before


def test_generate_easy_train_val_and_default_out(easy, tmp_path):
    out = generate(easy, 20, seed=2, datasets_dir=tmp_path, progress=False)
    assert out == tmp_path / "easy-2"
    assert set(imageset.load(out).splits) == {"train", "val"}


def test_bad_n_and_unwritable_out(easy, tmp_path):
    for n in (0, -3):
        with pytest.raises(BadInput):
            generate(easy, n, seed=0, out=tmp_path / "x", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BadInput, match="cannot write"):
        generate(easy, 8, seed=0, out=blocker / "set", progress=False)
    assert blocker.read_text() == "not a folder"
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(BadInput, match="cannot write"):
            generate(easy, 8, seed=0, out=ro / "sub" / "set", progress=False)
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o700)
    assert not (tmp_path / "x").exists()


def _write(tmp_path: Path, data, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_card_errors(tmp_path):
    with pytest.raises(BadInput, match="unknown card 'nope'"):
        load_card("nope")
    with pytest.raises(BadInput, match="malformed YAML"):
        load_card(_write(tmp_path, "instrument: [1, 2\n"))
    data = yaml.safe_load((CARDS_DIR / "hard.yaml").read_text())
    del data["population"]["theta_E"]["median"]
    with pytest.raises(BadInput, match="population.theta_E.median"):
        load_card(_write(tmp_path, data))
    data = yaml.safe_load((CARDS_DIR / "hard.yaml").read_text())
    data["population"]["lens_fraction"] = 1.5
    with pytest.raises(BadInput, match="lens_fraction"):
        load_card(_write(tmp_path, data))
    data = yaml.safe_load((CARDS_DIR / "hard.yaml").read_text())
    data["instrument"]["band"]["g"]["fwhm"] = "wide"
    with pytest.raises(BadInput, match=r"c\.yaml.*instrument\.band\.g\.fwhm"):
        load_card(_write(tmp_path, data))
    for bad in (1.5, -0.1, "half"):
        with pytest.raises(BadInput, match="shift"):
            load_card(_write(tmp_path, {"base": "easy", "target": "hard", "shift": bad}))


def test_fingerprint_changes_with_card(tmp_path):
    data = yaml.safe_load((CARDS_DIR / "easy.yaml").read_text())
    a = load_card(_write(tmp_path, data, "a.yaml"))
    data["population"]["lens_fraction"] = 0.4
    b = load_card(_write(tmp_path, data, "a.yaml"))
    assert a.fingerprint != b.fingerprint
    assert load_card("easy").fingerprint == load_card("easy").fingerprint


def test_shift_interpolates(tmp_path, easy, hard):
    def card(t):
        return load_card(_write(tmp_path, {"name": "mid", "base": "easy", "target": "hard", "shift": t}))

    strip = [("population", "lens_fraction"), ("population", "theta_E", "median"),
             ("instrument", "band", "i", "fwhm"), ("nuisances", "hard_negatives", "ring")]

    def get(d, keys):
        for k in keys:
            d = d[k]
        return d

    c0, c1, ch = card(0), card(1), card(0.5)
    for keys in strip:
        assert get(c0.data, keys) == pytest.approx(get(easy.data, keys))
        assert get(c1.data, keys) == pytest.approx(get(hard.data, keys))
        mid = 0.5 * (get(easy.data, keys) + get(hard.data, keys))
        assert get(ch.data, keys) == pytest.approx(mid)
    assert get(c0.data, ("population", "source", "mag_r")) == easy.data["population"]["source"]["mag_r"]
    assert c0.data["splits"] == hard.data["splits"]   # a rung towards the target card is a target card
    assert c1.data["splits"]["labelled_frac"] == 0.2
    assert len({c0.fingerprint, c1.fingerprint, ch.fingerprint}) == 3
    images, _, _ = simulate_arrays(ch, 4, seed=0, progress=False)
    assert images.shape == (4, 3, 64, 64)


def test_contact_sheet(easy, tmp_path):
    out = generate(easy, 12, seed=0, out=tmp_path / "e", progress=False)
    png = contact_sheet(out, tmp_path / "sheet.png", n=8)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BadInput):
        contact_sheet(tmp_path / "missing", tmp_path / "x.png")
