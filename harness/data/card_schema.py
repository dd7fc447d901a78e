"""The card schema: every key a card needs (and the optional ones), its type and range, and the check.

Kept apart from `cards` (which loads, resolves shift/derived cards and fingerprints) so that the one
place to read what a card may say is this table; an error names the file and the dotted key.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from harness.errors import BadInput

# Required schema: dotted key -> (type, low, high). `None` bounds are open. Ranges are [lo, hi] pairs.
_NUM = (int, float)
SCHEMA: dict[str, tuple[Any, float | None, float | None]] = {
    "instrument.pixel_scale": (_NUM, 0.01, 2.0),
    "instrument.npix": (int, 8, 512),
    "instrument.bands": (list, None, None),
    "instrument.zeropoint": (_NUM, 0, 50),
    "population.lens_fraction": (_NUM, 0.0, 1.0),
    "population.theta_E.median": (_NUM, 0.05, 5.0),
    "population.theta_E.sigma_ln": (_NUM, 0.0, 2.0),
    "population.theta_E.range": ("range", 0.05, 5.0),
    "population.lens_model.epl_fraction": (_NUM, 0.0, 1.0),
    "population.lens_model.gamma": ("range", 1.2, 2.8),
    "population.lens_model.q": ("range", 0.2, 1.0),
    "population.lens_model.shear": ("range", 0.0, 0.3),
    "population.lens_light.mag_r": ("range", 10, 30),
    "population.lens_light.R_eff": ("range", 0.05, 10),
    "population.lens_light.n_sersic": ("range", 0.3, 8),
    "population.lens_light.q": ("range", 0.1, 1.0),
    "population.lens_light.g_r": (_NUM, -1, 3),
    "population.lens_light.r_i": (_NUM, -1, 3),
    "population.lens_light.colour_scatter": (_NUM, 0, 1),
    "population.source.mag_r": ("range", 10, 32),
    "population.source.R_eff": ("range", 0.01, 5),
    "population.source.n_sersic": ("range", 0.3, 8),
    "population.source.q": ("range", 0.1, 1.0),
    "population.source.beta_max": (_NUM, 0.0, 2.0),
    "population.source.g_r": (_NUM, -1, 3),
    "population.source.r_i": (_NUM, -1, 3),
    "population.source.colour_scatter": (_NUM, 0, 1),
    "population.source.min_lensed_pix": (int, 0, 4096),
    "population.source.clumps.max": (int, 0, 20),
    "population.source.clumps.flux_fraction": ("range", 0.0, 1.0),
    "population.source.clumps.sigma": ("range", 0.001, 1.0),
    "nuisances.neighbours.rate": (_NUM, 0, 50),
    "nuisances.neighbours.mag_r": ("range", 10, 32),
    "nuisances.stars.rate": (_NUM, 0, 50),
    "nuisances.stars.mag_r": ("range", 10, 32),
    "nuisances.hard_negatives.blue_companion": (_NUM, 0.0, 1.0),
    "nuisances.hard_negatives.tidal_spiral": (_NUM, 0.0, 1.0),
    "nuisances.hard_negatives.ring": (_NUM, 0.0, 1.0),
}
BAND_SCHEMA: dict[str, tuple[Any, float | None, float | None]] = {
    "psf": (str, None, None),
    "fwhm": (_NUM, 0.05, 5.0),
    "fwhm_scatter": (_NUM, 0.0, 2.0),
    "moffat_beta": (_NUM, 1.1, 20.0),
    "sky_mag": (_NUM, 10, 30),
    "zeropoint_inst": (_NUM, 10, 40),
    "exptime": (_NUM, 0.001, 1e7),
    "n_exposures": (int, 1, 100000),
    "gain": (_NUM, 0.01, 100),
    "read_noise": (_NUM, 0, 100),
}
# Optional keys (absent means off): an anisotropic PSF per band, and detector effects.
OPTIONAL_BAND_SCHEMA: dict[str, tuple[Any, float | None, float | None]] = {
    "psf_e": (_NUM, 0.0, 0.9),
    "psf_angle": (_NUM, -360.0, 360.0),
}
DETECTOR_SCHEMA: dict[str, tuple[Any, float | None, float | None]] = {
    "resample": (bool, None, None),
    "sky_gradient": (_NUM, 0.0, 100.0),
    "cosmic_rays": (_NUM, 0.0, 50.0),
    "bad_columns": (_NUM, 0.0, 1.0),
    "nan_edge": (_NUM, 0.0, 1.0),
}

def _get(data: dict, dotted: str, path: Path) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise BadInput(f"{path}: missing key '{dotted}'")
        cur = cur[part]
    return cur


def _check(value: Any, kind: Any, lo: float | None, hi: float | None, key: str, path: Path) -> None:
    def num_ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if kind == "range":
        if not (isinstance(value, list) and len(value) == 2 and all(num_ok(v) for v in value)):
            raise BadInput(f"{path}: key '{key}' must be a [low, high] pair of numbers, got {value!r}")
        if value[0] > value[1]:
            raise BadInput(f"{path}: key '{key}' has low > high ({value})")
        vals = value
    elif kind is _NUM or kind is int:
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise BadInput(f"{path}: key '{key}' must be an integer, got {value!r}")
        if not num_ok(value):
            raise BadInput(f"{path}: key '{key}' must be a number, got {value!r}")
        vals = [value]
    else:
        if not isinstance(value, kind):
            raise BadInput(f"{path}: key '{key}' must be a {kind.__name__}, got {value!r}")
        return
    for v in vals:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise BadInput(f"{path}: key '{key}' = {v} is out of range [{lo}, {hi}]")


# Substructure cards (`task: substructure`, DeepLense Test I): one band, a main halo, three classes.
SUBSTRUCTURE_SCHEMA: dict[str, tuple[Any, float | None, float | None]] = {
    "instrument.pixel_scale": (_NUM, 0.005, 2.0),
    "instrument.npix": (int, 8, 512),
    "instrument.bands": (list, None, None),
    "instrument.psf_fwhm": (_NUM, 0.005, 5.0),
    "instrument.noise": (str, None, None),
    "population.z_lens": (_NUM, 0.01, 5.0),
    "population.z_source": (_NUM, 0.02, 10.0),
    "population.halo_mass": (_NUM, 1e9, 1e15),
    "population.class_fractions": (list, None, None),
    "population.lens.q": ("range", 0.2, 1.0),
    "population.lens.shear": ("range", 0.0, 0.3),
    "population.source.R_sersic": ("range", 0.01, 5.0),
    "population.source.n_sersic": ("range", 0.3, 8.0),
    "population.source.q": ("range", 0.1, 1.0),
    "population.source.offset": (_NUM, 0.0, 3.0),
    "substructure.sphere.n_mean": (_NUM, 0.0, 1000.0),
    "substructure.sphere.mass_range": ("range", 1e3, 1e13),
    "substructure.sphere.slope": (_NUM, -3.0, 0.0),
    "substructure.sphere.radius": ("range", 0.0, 10.0),
    "substructure.vort.n_points": (int, 2, 10000),
    "substructure.vort.mass": (_NUM, 1e3, 1e13),
    "substructure.vort.log10_axion_ev": ("range", -30.0, -18.0),
}
NOISE_SCHEMA: dict[str, dict[str, tuple[Any, float | None, float | None]]] = {
    "gaussian-poisson": {"instrument.background_rms": (_NUM, 0.0, 1e6),
                         "instrument.exptime_log10": ("range", -3.0, 8.0),
                         "population.source.amp": (_NUM, 0.0, 1e9)},
    "euclid-vis": {"instrument.coadd_years": (int, 2, 6),   # lenstronomy's Euclid config: 2-6 years
                   "population.source.magnitude": ("range", 10.0, 35.0)},
    "hst-wfc3-f160w": {"population.source.magnitude": ("range", 10.0, 35.0)},
}
TASKS = ("lens-finding", "substructure", "ssl-real")
# keys every card may hold besides its task's schema
COMMON_KEYS = {"name", "task", "splits.labelled_frac", "splits.test_frac", "splits.val_frac"}


def validate(data: dict, path: Path) -> None:
    """Every required key present, typed and in range; BadInput names the file and the key."""
    task = data.get("task", "lens-finding")
    if task not in TASKS:
        raise BadInput(f"{path}: key 'task' must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "substructure":
        _validate_substructure(data, path)
        return
    for key, (kind, lo, hi) in SCHEMA.items():
        _check(_get(data, key, path), kind, lo, hi, key, path)
    bands = data["instrument"]["bands"]
    if not bands or not all(isinstance(b, str) for b in bands):
        raise BadInput(f"{path}: key 'instrument.bands' must be a non-empty list of band names")
    if "r" not in bands:
        raise BadInput(f"{path}: key 'instrument.bands' must include 'r' (magnitudes are r-band anchored)")
    for b in bands:
        bd = _get(data, f"instrument.band.{b}", path)
        if not isinstance(bd, dict):
            raise BadInput(f"{path}: key 'instrument.band.{b}' must be a mapping")
        for k, (kind, lo, hi) in BAND_SCHEMA.items():
            key = f"instrument.band.{b}.{k}"
            _check(_get(data, key, path), kind, lo, hi, key, path)
        for k, (kind, lo, hi) in OPTIONAL_BAND_SCHEMA.items():
            if k in bd:
                _check(bd[k], kind, lo, hi, f"instrument.band.{b}.{k}", path)
        if bd["psf"] not in ("gaussian", "moffat"):
            raise BadInput(f"{path}: key 'instrument.band.{b}.psf' must be gaussian or moffat, "
                           f"got {bd['psf']!r}")
    det = data["instrument"].get("detector")
    if det is not None:
        if not isinstance(det, dict):
            raise BadInput(f"{path}: key 'instrument.detector' must be a mapping")
        for k, v in det.items():
            if k not in DETECTOR_SCHEMA:
                raise BadInput(f"{path}: unknown key 'instrument.detector.{k}' "
                               f"(known: {', '.join(DETECTOR_SCHEMA)})")
            _check(v, *DETECTOR_SCHEMA[k], f"instrument.detector.{k}", path)
    if not 0 < data["population"]["lens_fraction"] < 1:   # every split needs both classes
        raise BadInput(f"{path}: key 'population.lens_fraction' must be above 0 and below 1 (both lenses "
                       f"and non-lenses), got {data['population']['lens_fraction']}")
    sp = _get(data, "splits", path)
    if not isinstance(sp, dict):
        raise BadInput(f"{path}: key 'splits' must be a mapping")
    _check_splits(sp, data, path)
    known = set(SCHEMA) | {"instrument.detector"} | {f"instrument.detector.{k}" for k in DETECTOR_SCHEMA}
    known |= {f"instrument.band.{b}.{k}" for b in bands for k in (*BAND_SCHEMA, *OPTIONAL_BAND_SCHEMA)}
    _refuse_unknown_keys(data, known, path)


def _leaves(d: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every non-mapping value (a [low, high] list is one leaf)."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _leaves(v, f"{key}.") if isinstance(v, dict) and v else [key]
    return out


def _refuse_unknown_keys(data: dict, known: set[str], path: Path) -> None:
    """A key the schema does not know is a typo until proven otherwise: name it and the nearest known."""
    known = known | COMMON_KEYS
    for key in _leaves(data):
        if key in known:
            continue
        near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise BadInput(f"{path}: unknown key '{key}'{hint}")


def _check_splits(sp: dict, data: dict, path: Path) -> None:
    """A target card's labelled/test shares, or a source card's validation share."""
    if "labelled_frac" in sp:
        _check(sp["labelled_frac"], _NUM, 0.0, 1.0, "splits.labelled_frac", path)
        _check(_get(data, "splits.test_frac", path), _NUM, 0.0, 1.0, "splits.test_frac", path)
        lf, tf = sp["labelled_frac"], sp["test_frac"]
        if not (0 < lf and 0 < tf and lf + tf < 1):
            raise BadInput(f"{path}: keys 'splits.labelled_frac' + 'splits.test_frac' "
                           "must be > 0 and sum < 1")
    else:
        _check(_get(data, "splits.val_frac", path), _NUM, 0.0, 0.9, "splits.val_frac", path)


def _validate_substructure(data: dict, path: Path) -> None:
    """A substructure card: its schema, its noise model's keys, one band, fractions summing to 1."""
    for key, (kind, lo, hi) in SUBSTRUCTURE_SCHEMA.items():
        _check(_get(data, key, path), kind, lo, hi, key, path)
    noise = data["instrument"]["noise"]
    if noise not in NOISE_SCHEMA:
        raise BadInput(f"{path}: key 'instrument.noise' must be one of {', '.join(NOISE_SCHEMA)}, "
                       f"got {noise!r}")
    for key, (kind, lo, hi) in NOISE_SCHEMA[noise].items():
        _check(_get(data, key, path), kind, lo, hi, key, path)
    if len(data["instrument"]["bands"]) != 1:
        raise BadInput(f"{path}: key 'instrument.bands' must name one band "
                       "(substructure images are single-band)")
    fr = data["population"]["class_fractions"]
    fractions = isinstance(fr, list) and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in fr)
    if not fractions or len(fr) != 3 or abs(sum(fr) - 1) > 1e-6:
        raise BadInput(f"{path}: key 'population.class_fractions' must be three fractions (no, sphere, vort) "
                       f"summing to 1, got {fr!r}")
    if data["population"]["z_source"] <= data["population"]["z_lens"]:
        raise BadInput(f"{path}: key 'population.z_source' must exceed 'population.z_lens'")
    sp = _get(data, "splits", path)
    if not isinstance(sp, dict):
        raise BadInput(f"{path}: key 'splits' must be a mapping")
    _check_splits(sp, data, path)
    _refuse_unknown_keys(data, set(SUBSTRUCTURE_SCHEMA) | set(NOISE_SCHEMA[noise]), path)
