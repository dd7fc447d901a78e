"""Backbones and the lens finder."""

from harness.models.backbones import BACKBONES, make_backbone
from harness.models.finder import LensFinder

__all__ = ["BACKBONES", "LensFinder", "make_backbone"]
