"""Shift suites: which target cards a `--suite` run covers, each once per feature set.

A suite is a name in `datasets/suites.yaml` (cards, plus the cards also run image-only) or a comma
list of cards and paths given on the command line. Every entry becomes one target of the same
source: the easy-only SSL and source stages are shared (their cache key ignores the target), and
each card gets its own baseline, control and oracle because every method runs on every card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import BadInput

SUITES_FILE = Path(__file__).resolve().parents[1] / "datasets" / "suites.yaml"


@dataclass(frozen=True)
class Target:
    card: str            # card name, card path or image-set folder
    use_catalog: bool    # False: the image-only variant


def _suites(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError) as e:
        raise BadInput(f"{path}: unreadable suites file ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a suites file maps suite names to {{cards: [...], image_only: [...]}}")
    return data


def resolve(spec: str, use_catalog: bool = True, path: Path = SUITES_FILE) -> list[Target]:
    """The targets of a suite name or of a comma list of cards; each card is validated first."""
    from harness.data.cards import load_card

    suites = _suites(path)
    if spec in suites:
        entry = suites[spec]
        if not isinstance(entry, dict) or not isinstance(entry.get("cards"), list) or not entry["cards"]:
            raise BadInput(f"{path}: suite '{spec}' needs a non-empty list under 'cards'")
        cards, image_only = [str(c) for c in entry["cards"]], [str(c) for c in entry.get("image_only") or []]
        unknown = [c for c in image_only if c not in cards]
        if unknown:
            raise BadInput(f"{path}: suite '{spec}': image_only card '{unknown[0]}' is not in its cards")
    else:
        cards, image_only = [c.strip() for c in spec.split(",") if c.strip()], []
        if not cards:
            raise BadInput("--suite is empty")
    for c in cards:
        if not Path(c).is_dir():   # an image-set folder is checked when it is loaded
            try:
                load_card(c)
            except BadInput as e:
                known = ", ".join(sorted(suites))
                raise BadInput(f"--suite {spec}: {e} (suites: {known})") from None
    out = [Target(c, use_catalog) for c in cards]
    if use_catalog:
        out += [Target(c, False) for c in cards if c in image_only]
    return out
