"""Dataset cards: YAML declarations of a simulated domain, validated and fingerprinted.

A card names an instrument, a lens/non-lens population, nuisances and split sizes. The
fingerprint (hash of the resolved numbers) keys every cached stage, so any edit to a card
invalidates what was built from it. A card may also be a `shift` between two cards, for
sweeping the size of the domain gap, or a `base` card with a few keys `set` to other values (one
controlled change: `hard-balanced` is `hard` with lens fraction 0.5). The format is documented in
`datasets/cards/README.md`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import BadInput

CARDS_DIR = Path(__file__).resolve().parents[2] / "datasets" / "cards"
SHIPPED = tuple(sorted(p.stem for p in CARDS_DIR.glob("*.yaml")))

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
}
SHIFT_KEYS = {"name", "base", "target", "shift"}
DERIVED_KEYS = {"name", "base", "set"}


@dataclass(frozen=True)
class Card:
    """A validated card: `data` is the resolved dict, `text` is copied beside generated sets."""

    name: str
    data: dict
    text: str
    fingerprint: str
    shift: float | None = None  # position on the easy (0) -> hard (1) axis, where known

    @property
    def bands(self) -> list[str]:
        return list(self.data["instrument"]["bands"])


def fingerprint(data: dict) -> str:
    """sha256 of the canonical JSON of the resolved card, 16 hex chars."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolve_path(spec: str | Path, cards_dir: Path) -> Path:
    s = str(spec)
    if s in SHIPPED or ((cards_dir / f"{s}.yaml").is_file() and "/" not in s
                        and not s.endswith((".yaml", ".yml"))):
        p = cards_dir / f"{s}.yaml"
        if not p.is_file():
            raise BadInput(f"{p}: shipped card missing")
        return p
    p = Path(spec)
    if s.endswith((".yaml", ".yml")) or p.is_file():
        if not p.is_file():
            raise BadInput(f"{p}: card file not found")
        return p
    raise BadInput(f"unknown card '{s}' (shipped: {', '.join(SHIPPED)}; or give a path to a .yaml)")


def _read_yaml(path: Path) -> tuple[dict, str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInput(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{path}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a card must be a YAML mapping")
    return data, text


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


def validate(data: dict, path: Path) -> None:
    """Every required key present, typed and in range; BadInput names the file and the key."""
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
    sp = _get(data, "splits", path)
    if not isinstance(sp, dict):
        raise BadInput(f"{path}: key 'splits' must be a mapping")
    if "labelled_frac" in sp:
        _check(sp["labelled_frac"], _NUM, 0.0, 1.0, "splits.labelled_frac", path)
        _check(_get(data, "splits.test_frac", path), _NUM, 0.0, 1.0, "splits.test_frac", path)
        lf, tf = sp["labelled_frac"], sp["test_frac"]
        if not (0 < lf and 0 < tf and lf + tf < 1):
            raise BadInput(f"{path}: keys 'splits.labelled_frac' + 'splits.test_frac' "
                           "must be > 0 and sum < 1")
    else:
        _check(_get(data, "splits.val_frac", path), _NUM, 0.0, 0.9, "splits.val_frac", path)


def _interpolate(a: Any, b: Any, t: float, key: str, path: Path) -> Any:
    """Linear blend of numeric leaves; other leaves come from the nearer end."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = {}
        near = a if t < 0.5 else b
        for k in list(a) + [k for k in b if k not in a]:
            if k in a and k in b:
                out[k] = _interpolate(a[k], b[k], t, f"{key}.{k}" if key else k, path)
            elif k in near:  # a key only one end has belongs to the nearer end
                out[k] = near[k]
        return out
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        v = (1 - t) * a + t * b
        if isinstance(a, int) and isinstance(b, int):
            return round(v)
        return round(float(v), 10)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_interpolate(x, y, t, f"{key}[{i}]", path) for i, (x, y) in enumerate(zip(a, b))]
    return a if t < 0.5 else b


def _resolve_shift(data: dict, path: Path, cards_dir: Path, depth: int) -> dict:
    extra = set(data) - SHIFT_KEYS
    if extra:
        raise BadInput(f"{path}: a shift card takes only {sorted(SHIFT_KEYS)}, got key '{min(extra)}'")
    for k in ("base", "target"):
        if not isinstance(data.get(k), str):
            raise BadInput(f"{path}: key '{k}' must name a card (easy, hard or a path)")
    t = data.get("shift")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 <= t <= 1.0):
        raise BadInput(f"{path}: key 'shift' must be a number in [0, 1], got {t!r}")
    base = _load_data(data["base"], cards_dir, depth + 1, path.parent)
    target = _load_data(data["target"], cards_dir, depth + 1, path.parent)
    return _interpolate(base, target, float(t), "", path)


def _resolve_derived(data: dict, path: Path, cards_dir: Path, depth: int) -> dict:
    """A base card with dotted keys set to new values; every key must already exist in the base."""
    extra = set(data) - DERIVED_KEYS
    if extra:
        raise BadInput(f"{path}: a derived card takes only {sorted(DERIVED_KEYS)}, got key '{min(extra)}'")
    if not isinstance(data.get("base"), str):
        raise BadInput(f"{path}: key 'base' must name a card (easy, hard or a path)")
    changes = data.get("set")
    if not isinstance(changes, dict) or not changes:
        raise BadInput(f"{path}: key 'set' must map dotted keys to values "
                       "(e.g. population.lens_fraction: 0.5)")
    out = copy.deepcopy(_load_data(data["base"], cards_dir, depth + 1, path.parent))
    for dotted, value in changes.items():
        *parents, leaf = str(dotted).split(".")
        cur = out
        for part in parents:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if not isinstance(cur, dict) or leaf not in cur:
            raise BadInput(f"{path}: key 'set.{dotted}' is not a key of the base card '{data['base']}'")
        cur[leaf] = value
    return out


def _load_data(spec: str | Path, cards_dir: Path, depth: int = 0, rel: Path | None = None) -> dict:
    if depth > 4:
        raise BadInput(f"card '{spec}': shift cards nest too deeply")
    s = str(spec)
    if rel is not None and s not in SHIPPED and not Path(s).is_absolute() and (rel / s).is_file():
        spec = rel / s
    path = _resolve_path(spec, cards_dir)
    data, _ = _read_yaml(path)
    if "set" in data:
        data = _resolve_derived(data, path, cards_dir, depth)
    elif "shift" in data or "base" in data:
        data = _resolve_shift(data, path, cards_dir, depth)
    validate(data, path)
    return data


def load_card(spec: str | Path, cards_dir: Path = CARDS_DIR) -> Card:
    """Load, resolve (shift) and validate a card: 'easy', 'hard' or a path to a YAML file."""
    cards_dir = Path(cards_dir)
    path = _resolve_path(spec, cards_dir)
    raw, text = _read_yaml(path)
    data = _load_data(spec, cards_dir)
    name = raw.get("name") if isinstance(raw.get("name"), str) else path.stem
    if "shift" in raw and not isinstance(raw.get("name"), str):
        name = f"{path.stem}"
    data = dict(data)
    data["name"] = name
    if "shift" in raw or "set" in raw:  # a self-contained copy: the recipe as comments, then the numbers
        head = "".join(f"# {line}\n" for line in text.splitlines())
        text = f"# resolved from the card {path}:\n{head}" + yaml.safe_dump(data, sort_keys=False)
    if "shift" in raw:
        shift = float(raw["shift"])
    else:
        shift = {"easy": 0.0, "hard": 1.0}.get(str(spec)) if str(spec) in SHIPPED else None
    return Card(name=name, data=data, text=text, fingerprint=fingerprint(data), shift=shift)
