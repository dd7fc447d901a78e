"""Band names where two sets meet: channels are matched by position, so other bands are refused."""

from __future__ import annotations

import pytest

from harness.data.bands import check_bands, is_generic
from harness.errors import BadInput


@pytest.mark.parametrize("a, b", [
    (["g", "r", "i"], ["g", "r", "i"]),
    (["g", "r", "i"], ["G", "R", "I"]),          # case is not a band
    (["vis"], ["f160w"]),                        # one band each: the instrument shift being studied
    (["g", "r", "i"], ["c0", "c1", "c2"]),       # an importer's placeholders match any names
    (3, ["g", "r", "i"]),                        # a run that recorded only its count
])
def test_bands_that_a_model_reads_alike(a, b) -> None:
    check_bands("easy", a, "hard", b)


@pytest.mark.parametrize("a, b, needle", [
    (["g", "r", "i"], ["r", "i", "z"], "has bands g, r, i but hard has r, i, z (other bands)"),
    (["g", "r", "i"], ["i", "r", "g"], "(the same bands in another order)"),
    (["g", "r", "i"], ["g", "r", "i", "z", "y"], "easy has 3 bands (g, r, i) but hard has 5 (g, r, i, z, y)"),
    (3, ["r"], "easy has 3 bands but hard has 1 (r)"),
])
def test_bands_that_would_be_read_as_others_are_refused(a, b, needle) -> None:
    with pytest.raises(BadInput) as e:
        check_bands("easy", a, "hard", b, "; hint")
    assert needle in str(e.value) and str(e.value).endswith("; hint")


def test_generic_names_are_the_importers_placeholders() -> None:
    assert is_generic(["x"]) and is_generic(["c0", "c1"]) and not is_generic(["g", "c1"])
