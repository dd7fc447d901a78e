"""Lens DA Harness: a benchmark for domain adaptation in strong-lens finding."""

__version__ = "0.1.0"
