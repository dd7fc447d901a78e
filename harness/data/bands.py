"""Band names, checked where two image sets meet: channels are matched by position, so a model trained
on g, r, i that is shown r, i, z would read each band as another and score noise.

Importers that cannot know their filters name bands `x` (one) or `c0, c1, …`: those are generic and
match anything of the same count. Two single named bands may differ (DeepLense Model I's VIS against
Model III's F160W is the shift being studied); two lists of several named bands must be equal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from harness.data import imageset
from harness.errors import BadInput

_GENERIC = re.compile(r"x|c\d+")
BANDS_HINT = "; give --easy and --hard sets of the same bands, in the same order"


def is_generic(bands: Sequence[str]) -> bool:
    """Whether the names are an importer's placeholders rather than filters."""
    return all(_GENERIC.fullmatch(str(b)) for b in bands)


def check_bands(a_what: str, a: Sequence[str] | int, b_what: str, b: Sequence[str] | int,
                hint: str = "") -> None:
    """Refuse two band lists a model could not read alike (a count where names were not recorded)."""
    na, nb = (x if isinstance(x, int) else len(x) for x in (a, b))
    names = ["" if isinstance(x, int) else ", ".join(map(str, x)) for x in (a, b)]
    if na != nb:
        shown = [f" ({n})" if n else "" for n in names]
        raise BadInput(f"{a_what} has {na} band{'s' * (na != 1)}{shown[0]} but {b_what} has {nb}{shown[1]}"
                       f"{hint}")
    if isinstance(a, int) or isinstance(b, int) or na == 1 or is_generic(a) or is_generic(b):
        return
    a, b = list(map(str, a)), list(map(str, b))
    if [x.lower() for x in a] != [x.lower() for x in b]:   # G, R, I is g, r, i
        how = "the same bands in another order" if sorted(a) == sorted(b) else "other bands"
        raise BadInput(f"{a_what} has bands {names[0]} but {b_what} has {names[1]} ({how}): channels are "
                       f"matched by position, so each would be read as another band{hint}")


def set_bands(s: imageset.ImageSet) -> list[str] | int:
    """A set's band names, or its channel count where its meta.json names none."""
    names = s.meta.get("bands")
    return list(names) if isinstance(names, list) and len(names) == s.images.shape[1] else s.images.shape[1]


def declared_bands(spec: str) -> list[str] | int:
    """The bands a card or an image-set folder declares, read before anything is generated."""
    if Path(spec).is_dir():
        return set_bands(imageset.load(spec))
    from harness.data.cards import load_card

    return load_card(spec).bands
