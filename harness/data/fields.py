"""The field of sky the model sees of each stamp. Lens finding centre-crops to the model input without
resampling (a pixel-scale change is part of the shift it studies), so a set of another scale or stamp
size shows the model another field: `run` and `score` say so rather than leave it silent.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.data import imageset


def crop_field(s: imageset.ImageSet, size: int) -> float | None:
    """Arcsec of each stamp a centre-cropping task shows the model (at most `size` pixels a side); None
    without a positive pixel scale."""
    ps = s.meta.get("pixel_scale")
    return min(*s.images.shape[-2:], size) * ps if isinstance(ps, (int, float)) and ps > 0 else None


def warn_fields(easy: imageset.ImageSet, hard: imageset.ImageSet, size: int,
                log: Callable[[str], None]) -> None:
    """Lens finding centre-crops both domains to `size` pixels without resampling (a pixel-scale change
    is part of the shift): say so where the two fields differ by more than 1.5x."""
    fe, fh = crop_field(easy, size), crop_field(hard, size)
    if fe is not None and fh is not None and max(fe, fh) > 1.5 * min(fe, fh):
        pe, ph = easy.meta["pixel_scale"], hard.meta["pixel_scale"]
        log(f"warning: the model sees {fe:.1f}\" of each easy stamp but {fh:.1f}\" of each hard one "
            f"({size}-pixel centre crops at {pe:g} and {ph:g}\"/px; lens finding does not resample)")
