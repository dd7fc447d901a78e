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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.data.card_schema import validate
from harness.errors import BadInput

CARDS_DIR = Path(__file__).resolve().parents[2] / "datasets" / "cards"
SHIPPED = tuple(sorted(p.stem for p in CARDS_DIR.glob("*.yaml")))

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

    @property
    def task(self) -> str:
        """What the card's sets are for: lens-finding (the default) or substructure."""
        return str(self.data.get("task", "lens-finding"))

    @property
    def classes(self) -> list[str]:
        if self.task == "substructure":
            from harness.data.substructure import CLASSES

            return list(CLASSES)
        return ["non-lens", "lens"]


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
    if "/" in s:   # a path, not a card name: say what is missing
        raise BadInput(f"{s}: no such image-set folder or card file")
    raise BadInput(f"unknown card '{s}' (shipped: {', '.join(SHIPPED)}; or give a path to a .yaml)")


class _DuplicateKey(Exception):
    pass


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML's safe loader (libyaml's parser where PyYAML has it: every run reads a dozen cards), but a
    mapping that repeats a key is an error instead of last-one-wins."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> tuple[dict, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{path}: unreadable ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a text file (a card is UTF-8 YAML)") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise BadInput(f"{path}: key '{e}' appears twice (a later value would silently win)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{path}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a card must be a YAML mapping")
    return data, text


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
    out = _interpolate(base, target, float(t), "", path)
    ends = [e for e in (target, base) if "labelled_frac" in e["splits"]]
    if len(ends) == 1 and set(base["splits"]) != set(target["splits"]):   # a source and a target end:
        out["splits"] = dict(ends[0]["splits"])   # every rung is a target card (easy -> hard at 0.2 too)
    return out


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
    if "shift" in raw:   # the position on the easy (0) -> hard (1) axis, only where the ends are those two
        t, ends = float(raw["shift"]), (str(raw.get("base")), str(raw.get("target")))
        shift = t if ends == ("easy", "hard") else 1.0 - t if ends == ("hard", "easy") else None
    else:
        shift = {"easy": 0.0, "hard": 1.0}.get(str(spec)) if str(spec) in SHIPPED else None
    return Card(name=name, data=data, text=text, fingerprint=fingerprint(data), shift=shift)
