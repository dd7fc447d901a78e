"""The shift suite's cards: derived cards, the instrument effects of `camera`, optional-key checks, suites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.data import detector
from harness.data.cards import CARDS_DIR, SHIPPED, load_card
from harness.data.psf import kernel_grid, psf_kernels
from harness.data.scene import Renderer
from harness.errors import BadInput
from harness.suites import Target, resolve


def _write(tmp: Path, data: dict | str, name: str = "c.yaml") -> Path:
    p = tmp / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_suite_cards_are_shipped_and_valid() -> None:
    assert {"easy", "hard", "hard-balanced", "hard-clean", "camera"} <= set(SHIPPED)
    for name in SHIPPED:
        assert load_card(name).name == name


def test_derived_cards_change_only_what_they_set() -> None:
    hard, bal, clean = (load_card(c).data for c in ("hard", "hard-balanced", "hard-clean"))
    assert bal["population"]["lens_fraction"] == 0.5
    assert {k: v for k, v in bal.items() if k not in ("population", "name")} == \
        {k: v for k, v in hard.items() if k not in ("population", "name")}
    assert {k: v for k, v in bal["population"].items() if k != "lens_fraction"} == \
        {k: v for k, v in hard["population"].items() if k != "lens_fraction"}
    assert set(clean["nuisances"]["hard_negatives"].values()) == {0.0}
    easy = load_card("easy").data
    assert clean["nuisances"]["neighbours"]["rate"] == easy["nuisances"]["neighbours"]["rate"]
    assert clean["population"] == hard["population"] and clean["instrument"] == hard["instrument"]


def test_derived_card_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"set\.population\.nope.*not a key of the base"):
        load_card(_write(tmp_path, {"name": "x", "base": "hard", "set": {"population.nope": 1}}))
    with pytest.raises(BadInput, match="lens_fraction.*out of range"):
        load_card(_write(tmp_path, {"name": "x", "base": "hard", "set": {"population.lens_fraction": 2}}))
    with pytest.raises(BadInput, match="key 'set' must map"):
        load_card(_write(tmp_path, {"name": "x", "base": "hard", "set": []}))
    with pytest.raises(BadInput, match="derived card takes only"):
        load_card(_write(tmp_path, {"name": "x", "base": "hard", "set": {"population.lens_fraction": 0.4},
                                    "extra": 1}))


def test_optional_instrument_keys_are_validated(tmp_path: Path) -> None:
    data = yaml.safe_load((CARDS_DIR / "camera.yaml").read_text())
    data["instrument"]["detector"]["cosmic_ray"] = 1
    with pytest.raises(BadInput, match=r"unknown key 'instrument\.detector\.cosmic_ray'"):
        load_card(_write(tmp_path, data))
    data = yaml.safe_load((CARDS_DIR / "camera.yaml").read_text())
    data["instrument"]["band"]["r"]["psf_e"] = 1.5
    with pytest.raises(BadInput, match=r"instrument\.band\.r\.psf_e.*out of range"):
        load_card(_write(tmp_path, data))
    data = yaml.safe_load((CARDS_DIR / "camera.yaml").read_text())
    data["instrument"]["detector"]["resample"] = "yes"
    with pytest.raises(BadInput, match=r"instrument\.detector\.resample.*bool"):
        load_card(_write(tmp_path, data))


def test_anisotropic_psf_is_elongated_along_its_angle_and_keeps_unit_sum() -> None:
    kx, ky = kernel_grid(0.1)
    spec = {"b": {"psf": "gaussian", "psf_e": 0.3, "psf_angle": 0.0}}
    k = psf_kernels(["b"], spec, np.array([0.6]), kx, ky)[0]
    assert k.sum() == pytest.approx(1.0)
    var_x, var_y = (k * kx**2).sum(), (k * ky**2).sum()
    assert var_x / var_y == pytest.approx((1.3 / 0.7) ** 2, rel=0.02)   # axis ratio (1+e)/(1-e) in sigma
    round_k = psf_kernels(["b"], {"b": {"psf": "gaussian"}}, np.array([0.6]), kx, ky)[0]
    assert np.allclose(round_k, round_k.T)


def test_resampling_correlates_neighbouring_noise_and_artefacts_are_recorded() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(1, 200, 200))
    truth: dict = {}
    out = detector.apply(noise, {"resample": True}, np.ones(1), np.random.default_rng(1), truth)
    corr = lambda a: np.corrcoef(a[0, :, :-1].ravel(), a[0, :, 1:].ravel())[0, 1]
    assert abs(corr(noise)) < 0.02 and corr(out) > 0.1
    truth = {}
    out = detector.apply(np.zeros((3, 40, 40)), {"cosmic_rays": 20.0, "bad_columns": 1.0}, np.ones(3),
                         np.random.default_rng(2), truth)
    assert truth["truth_cosmic_rays"] > 5 and truth["truth_bad_column"] == 1
    assert out.max() >= 5


def test_detector_effects_leave_other_cards_untouched_and_change_camera_stamps() -> None:
    cam = load_card("camera").data
    plain = yaml.safe_load(yaml.safe_dump(cam))
    del plain["instrument"]["detector"]
    a, ta = Renderer(cam).render(0, 5)
    b, tb = Renderer(plain).render(0, 5)
    assert a.shape == (3, 90, 90) and not np.allclose(a, b)
    assert {k: v for k, v in ta.items() if k in tb} == tb      # the scene itself is the same draw


def test_suite_resolves_names_lists_and_image_only(tmp_path: Path) -> None:
    got = resolve("shifts")
    assert Target("camera", True) in got and Target("camera", False) in got
    assert {t.card for t in got} == {"camera", "hard-balanced", "hard-clean", "hard"}
    assert resolve("hard,hard-clean") == [Target("hard", True), Target("hard-clean", True)]
    assert all(not t.use_catalog for t in resolve("shifts", use_catalog=False))
    with pytest.raises(BadInput, match="unknown card 'nope'.*suites: shifts"):
        resolve("hard,nope")
    bad = _write(tmp_path, {"s": {"cards": ["hard"], "image_only": ["camera"]}}, "suites.yaml")
    with pytest.raises(BadInput, match="image_only card 'camera' is not in its cards"):
        resolve("s", path=bad)


def test_shift_cards_sit_on_the_easy_hard_axis_only_between_easy_and_hard(tmp_path: Path) -> None:
    """The recorded shift is the position on easy (0) -> hard (1): reversed ends give 1 - shift, other
    ends none; a rung between the source and the target card is a target card even near easy."""
    def shift_card(name: str, base: str, target: str, t: float):
        return load_card(_write(tmp_path, {"name": name, "base": base, "target": target, "shift": t},
                                f"{name}.yaml"))

    near_easy = shift_card("a", "easy", "hard", 0.2)
    assert near_easy.shift == 0.2 and set(near_easy.data["splits"]) == set(load_card("hard").data["splits"])
    back = shift_card("b", "hard", "easy", 0.7)   # reversed ends: still a target card, at 1 - shift
    assert back.shift == pytest.approx(0.3) and back.data["splits"] == load_card("hard").data["splits"]
    assert shift_card("c", "hard", "camera", 0.5).shift is None


def test_a_reused_generated_set_carries_the_cards_shift_as_read_now(tmp_path: Path) -> None:
    """Generated folders are keyed by the card's numbers, not its shift: one made by older code (which
    recorded the raw `shift` of any ends) is reused with the card's current reading."""
    import json

    import torch

    from harness.domains import load_domain
    from harness.fs import write_checksums
    from harness.training import Runtime

    card = _write(tmp_path, {"name": "mid", "base": "hard", "target": "camera", "shift": 0.5}, "mid.yaml")
    rt = Runtime(torch.device("cpu"), quiet=True, log=lambda m: None)
    s = load_domain(str(card), 8, 0, tmp_path / "ds", rt)
    assert s.meta["shift"] is None
    meta = s.root / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "shift": 0.5}))   # as older code wrote it
    write_checksums(s.root)
    assert load_domain(str(card), 8, 0, tmp_path / "ds", rt).meta["shift"] is None
