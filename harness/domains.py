"""Device data and the honesty splits: what each stage may see.

This module owns loading (or generating) the easy and hard image sets, checking their splits and
observable features (leak-guarded on labels the harness may see), preparing the stamps and moving
them to the device as `DomainData`. The honesty rules start here: the hard `test` split enters
the device without labels (its labels are read from the image set only at evaluation), the hard
pool's truth is kept apart for oracle methods, and the class count comes from the sets' declared
classes, never from the hard test labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.api import DomainData
from harness.config import Preset, stable_hash
from harness.data import imageset
from harness.data.features import feature_matrix, observable_columns
from harness.data.preprocess import prepare
from harness.errors import BadInput
from harness.training import Runtime


@dataclass
class Prepared:
    """The easy/hard pair on the device, split as the honesty rules require."""

    easy: imageset.ImageSet
    hard: imageset.ImageSet
    columns: list[str]
    source: DomainData          # easy train, labelled
    source_val: DomainData      # easy val, labelled
    pool: DomainData            # hard pool, no labels
    pool_labels: torch.Tensor   # hard pool truth, handed only to oracle methods
    labelled: DomainData        # hard 20% labelled split
    test: DomainData            # hard test split, NO labels

    image_size: int = 64
    priors: dict = field(default_factory=dict, repr=False)   # BBSE estimates by source-stage key
    start_scores: dict = field(default_factory=dict, repr=False)   # step-0 checkpoint scores by weights

    @property
    def fingerprint(self) -> str:
        """Identity of everything a stage sees: both sets (content, size, seed, split indices), features."""
        return stable_hash(_ident(self.easy), _ident(self.hard), self.columns, self.image_size)

    @property
    def easy_images_fingerprint(self) -> str:
        """Identity of the easy training images alone, at the model input size: all that the easy-only
        SSL encoder sees (no catalog, no labels), so catalog and image-only runs share it too."""
        return stable_hash(_ident(self.easy), self.image_size)

    @property
    def source_fingerprint(self) -> str:
        """Identity of what the easy-only stages see: the easy set, the features, the input size and
        the classes. Targets with the same source share these stages (a shift suite trains them once)."""
        return stable_hash(_ident(self.easy), self.columns, self.image_size, self.classes)

    @property
    def num_classes(self) -> int:
        """From the sets' declared classes, never from the labels of the hard test split."""
        ce, ch = self.easy.meta.get("classes"), self.hard.meta.get("classes")
        if ce and ch:
            if list(ce) != list(ch):
                raise BadInput(f"easy classes {list(ce)} differ from hard classes {list(ch)}")
            return len(ce)
        seen = np.r_[self.easy.labels[self.easy.split("train")],
                     self.hard.labels[self.hard.split("labelled")]]
        return int(seen.max()) + 1

    @property
    def classes(self) -> list[str]:
        return list(self.hard.meta.get("classes") or [str(k) for k in range(self.num_classes)])


def _ident(s: imageset.ImageSet) -> tuple:
    splits = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]
              for k, v in sorted(s.splits.items())}
    return s.fingerprint, len(s), s.meta.get("seed"), splits


def load_domain(spec: str, n: int, seed: int, datasets_dir: Path, rt: Runtime, workers: int = 1
                ) -> imageset.ImageSet:
    """An existing image-set folder, or a card generated on the fly into `datasets_dir`."""
    if Path(spec).is_dir():
        return imageset.load(spec)
    from harness.data.cards import load_card
    from harness.data.simulate import generate

    card = load_card(spec)
    path = Path(datasets_dir) / f"{card.name}-{card.fingerprint[:8]}-n{n}-s{seed}"
    if path.exists():
        try:
            s = imageset.load(path)
        except BadInput as e:
            raise BadInput(f"corrupt cached data set {path} ({e}); delete it to regenerate") from None
        rt.log(f"data: reusing {path}")
        return s
    rt.log(f"data: generating {card.name} (n={n}, seed={seed}) into {path}")
    generate(card, n=n, seed=seed, workers=workers, out=path, progress=not rt.quiet)
    return imageset.load(path)


def _device_data(s: imageset.ImageSet, idx: np.ndarray, x: np.ndarray, feats: np.ndarray,
                 device: torch.device, with_labels: bool, name: str) -> DomainData:
    """The rows `idx` of a prepared set on the device (channels_last), with labels only if asked."""
    images = torch.from_numpy(np.ascontiguousarray(x[idx])).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    cat = torch.from_numpy(feats[idx]).to(device)
    labels = torch.from_numpy(s.labels[idx]).to(device) if with_labels else None
    return DomainData(images, cat, labels, name)


def prepare_data(preset: Preset, datasets_dir: Path, rt: Runtime) -> Prepared:
    """Load/generate both domains, check splits and features, and move them to the device."""
    d = preset.data
    easy = load_domain(d.easy, d.n_easy, d.seed, datasets_dir, rt, d.workers)
    hard = load_domain(d.hard, d.n_hard, d.seed + 1, datasets_dir, rt, d.workers)
    for s, need in ((easy, ("train", "val")), (hard, ("pool", "labelled", "test"))):
        for k in need:
            s.split(k)
    tr, va = easy.split("train"), easy.split("val")
    pool, lab, test = hard.split("pool"), hard.split("labelled"), hard.split("test")
    if easy.images.shape[1] != hard.images.shape[1]:
        raise BadInput(f"easy has {easy.images.shape[1]} bands but hard has {hard.images.shape[1]}")
    for name, s, idx in (("easy train", easy, tr), ("hard labelled", hard, lab)):
        if (s.labels[idx] < 0).any() or np.unique(s.labels[idx]).size < 2:
            raise BadInput(f"{s.root}: the {name} split needs labels of at least two classes")
    # features: observable columns both domains share, leak-checked on labels the harness may see;
    # none at all for an image-only model (--no-catalog), so a leaky catalog cannot block it
    cols = [c for c in observable_columns(easy.catalog) if c in set(observable_columns(hard.catalog))]
    if not preset.source.use_catalog:
        cols = []
    _, cols = feature_matrix(easy.catalog.iloc[tr], easy.labels[tr], cols)
    feature_matrix(hard.catalog.iloc[lab], hard.labels[lab], cols)
    fe_all, _ = feature_matrix(easy.catalog, easy.labels, cols, check=False)
    fh_all, _ = feature_matrix(hard.catalog, hard.labels, cols, check=False)
    size = d.image_size
    xe, xh = prepare(np.asarray(easy.images), size), prepare(np.asarray(hard.images), size)
    dev = rt.device
    return Prepared(
        easy=easy, hard=hard, columns=cols,
        source=_device_data(easy, tr, xe, fe_all, dev, True, "easy/train"),
        source_val=_device_data(easy, va, xe, fe_all, dev, True, "easy/val"),
        pool=_device_data(hard, pool, xh, fh_all, dev, False, "hard/pool"),
        pool_labels=torch.from_numpy(hard.labels[pool]).to(dev),
        labelled=_device_data(hard, lab, xh, fh_all, dev, True, "hard/labelled"),
        test=_device_data(hard, test, xh, fh_all, dev, False, "hard/test"),
        image_size=size,
    )
