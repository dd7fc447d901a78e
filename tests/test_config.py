"""Preset validation: a preset that cannot run is refused with BadInput before any work starts."""

from __future__ import annotations

import pytest

from harness.config import PRESETS, AdaptConfig, Preset, SourceConfig, SSLConfig, get_preset
from harness.errors import BadInput

SECTIONS = [("ssl", SSLConfig), ("source", SourceConfig), ("adapt", AdaptConfig)]


@pytest.mark.parametrize("section,cls", SECTIONS)
@pytest.mark.parametrize("field", ["steps", "batch_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_steps_and_batch_size_below_one_are_refused(section: str, cls: type, field: str, value: int) -> None:
    with pytest.raises(BadInput, match=f"preset bad: {section} needs steps >= 1 and batch_size >= 1"):
        Preset(name="bad", **{section: cls(**{field: value})})


@pytest.mark.parametrize("value", [0, -3])
def test_checkpoints_below_one_are_refused(value: int) -> None:
    with pytest.raises(BadInput, match="preset bad: adapt.checkpoints must be >= 1"):
        Preset(name="bad", adapt=AdaptConfig(checkpoints=value))


def test_a_changed_copy_is_validated_too() -> None:
    """`Preset.replace` (what CLI flags use) goes through the same checks."""
    smoke = get_preset("smoke")
    with pytest.raises(BadInput, match="adapt needs steps"):
        smoke.replace("adapt", steps=0)
    with pytest.raises(BadInput, match="adapt.checkpoints"):
        smoke.replace("adapt", checkpoints=0)
    assert smoke.replace("adapt", steps=1).adapt.steps == 1


def test_the_smallest_valid_preset_and_the_shipped_ones_are_accepted() -> None:
    ones = Preset(name="ones", ssl=SSLConfig(steps=1, batch_size=1),
                  source=SourceConfig(steps=1, batch_size=1),
                  adapt=AdaptConfig(steps=1, batch_size=1, checkpoints=1))
    assert ones.adapt.checkpoints == 1
    for name, preset in PRESETS.items():
        assert get_preset(name) is preset


def test_unknown_preset_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown preset 'huge'"):
        get_preset("huge")
