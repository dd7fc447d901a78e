"""Device data and the honesty splits: what each stage may see.

This module owns loading (or generating) the easy and hard image sets, checking their splits and
observable features (leak-guarded on labels the harness may see), preparing the stamps and moving
them to the device as `DomainData`. The honesty rules start here: the hard `test` split enters
the device without labels (its labels are read from the image set only at evaluation), the hard
pool's truth is kept apart for oracle methods, and the class count comes from the sets' declared
classes, never from the hard test labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.api import DomainData
from harness.config import Preset, stable_hash
from harness.data import imageset
from harness.data.bands import BANDS_HINT, check_bands, declared_bands, set_bands
from harness.data.features import feature_matrix, observable_columns
from harness.data.fields import warn_fields
from harness.data.preprocess import crop_to, prepare, resample
from harness.errors import BadInput
from harness.fs import SUMS, checksum_problem, locked, verified_or_removed
from harness.tasks import Task, get_task, task_of
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
    fov: float | None = None    # arcsec both domains were resampled to (tasks that resample), else None
    near_leaks: dict = field(default_factory=dict)   # model-input columns above LEAK_WARN: {name: AUROC}
    priors: dict = field(default_factory=dict, repr=False)   # BBSE estimates by source-stage key
    start_scores: dict = field(default_factory=dict, repr=False)   # step-0 scores (and test AUROC) by weights

    @property
    def task(self) -> str:
        """The task both sets declare (checked equal when they were prepared)."""
        return task_of(self.hard.meta)

    @property
    def _grid(self) -> tuple:
        """The model input's grid: its size, and the field resampled onto it where a task resamples;
        with a mark where stamps under that size are stretched before padding (older code padded
        first), so stages built on the old inputs are not reused. Other sets keep their keys."""
        grid = (self.image_size,) if self.fov is None else (self.image_size, self.fov)
        return (*grid, "stretch, then pad") if self.padded else grid

    @property
    def padded(self) -> bool:
        """Whether either domain's stamps are smaller than the model input (centre-crop tasks)."""
        sides = (*self.easy.images.shape[-2:], *self.hard.images.shape[-2:])
        return self.fov is None and min(sides) < self.image_size

    @property
    def fingerprint(self) -> str:
        """Identity of everything a stage sees: both sets (content, size, seed, split indices), features."""
        return stable_hash(set_identity(self.easy), set_identity(self.hard), self.columns, *self._grid)

    @property
    def easy_images_fingerprint(self) -> str:
        """Identity of the easy training images alone, at the model input size: all that the easy-only
        SSL encoder sees (no catalog, no labels), so catalog and image-only runs share it too."""
        return stable_hash(set_identity(self.easy), *self._grid)

    @property
    def source_fingerprint(self) -> str:
        """Identity of what the easy-only stages see: the easy set, the features, the input size and
        the classes. Targets with the same source share these stages (a shift suite trains them once)."""
        return stable_hash(set_identity(self.easy), self.columns, *self._grid, self.classes)

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

    def to(self, device: torch.device | str) -> Prepared:
        """A copy with every device tensor on `device` (Ray ships a CPU copy to each worker's device)."""
        def move(d: DomainData) -> DomainData:
            return dataclasses.replace(d, images=d.images.to(device), catalog=d.catalog.to(device),
                                       labels=None if d.labels is None else d.labels.to(device))

        moved = {f: move(getattr(self, f)) for f in ("source", "source_val", "pool", "labelled", "test")}
        return dataclasses.replace(self, **moved, pool_labels=self.pool_labels.to(device), priors={},
                                   start_scores={})


def set_identity(s: imageset.ImageSet) -> tuple:
    """What tells two image sets apart for caching: fingerprint (a card's, or an import's content hash),
    size, generation seed and the split indices (two draws of one card differ only in the last two)."""
    splits = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]
              for k, v in sorted(s.splits.items())}
    return s.fingerprint, len(s), s.meta.get("seed"), splits


def verified_set(path: Path) -> imageset.ImageSet:
    """An image-set folder checked against its SHA256SUMS first: an imported set cannot be rebuilt the
    way a generated one is, so a damaged one is refused rather than trained or scored on."""
    if (path / SUMS).is_file() and (problem := checksum_problem(path)) is not None:
        raise BadInput(f"{path}: {problem} ({SUMS}): the set changed after it was written; "
                       "import or generate it again")
    return imageset.load(path)


def load_domain(spec: str, n: int, seed: int, datasets_dir: Path, rt: Runtime, workers: int = 1
                ) -> imageset.ImageSet:
    """An existing image-set folder, or a card generated on the fly into `datasets_dir`."""
    if Path(spec).is_dir():
        return verified_set(Path(spec))
    from harness.data.cards import load_card
    from harness.data.simulate import generate

    card = load_card(spec)
    path = Path(datasets_dir) / f"{card.name}-{card.fingerprint[:8]}-n{n}-s{seed}"
    with locked(path):   # two runs on a cold cache generate it once; the second waits and reuses it
        if verified_or_removed(path, "generated data set", rt.log):
            rt.log(f"data: reusing {path}")
        else:
            rt.log(f"data: generating {card.name} (n={n}, seed={seed}) into {path}")
            generate(card, n=n, seed=seed, workers=workers, out=path, progress=not rt.quiet)
    s = imageset.load(path)
    s.meta["shift"] = card.shift   # the card's reading now (a folder made by older code may say otherwise)
    return s


def _device_data(s: imageset.ImageSet, idx: np.ndarray, x: np.ndarray, feats: np.ndarray,
                 device: torch.device, with_labels: bool, name: str) -> DomainData:
    """The rows `idx` of a prepared set on the device (channels_last), with labels only if asked."""
    images = torch.from_numpy(np.ascontiguousarray(x[idx])).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    cat = torch.from_numpy(feats[idx]).to(device)
    labels = torch.from_numpy(s.labels[idx]).to(device) if with_labels else None
    return DomainData(images, cat, labels, name)


def _check_card_roles(easy: str, hard: str) -> None:
    """A source card declares a validation share, a target card its labelled and test shares: swapping
    them is refused before anything is generated (folders are checked for their splits when loaded)."""
    from harness.data.cards import load_card

    for flag, spec, key, role in (("--easy", easy, "val_frac", "source"),
                                  ("--hard", hard, "labelled_frac", "target")):
        if not Path(spec).is_dir() and key not in load_card(spec).data["splits"]:
            raise BadInput(f"{flag} {spec}: not a {role}-domain card (its splits lack '{key}'; a source card "
                           "has splits.val_frac, a target card splits.labelled_frac and splits.test_frac)")


def _check_distinct(easy_spec: str, hard_spec: str, easy: imageset.ImageSet, hard: imageset.ImageSet) -> None:
    """One image-set folder given as both domains is refused: an imported set carries both families of
    splits, drawn independently, so the source model would train on hard test images. (Cards are safe:
    the two domains are drawn with different data seeds, even from one card.)"""
    folders = Path(easy_spec).is_dir() and Path(hard_spec).is_dir()
    if folders and (Path(easy_spec).resolve() == Path(hard_spec).resolve()
                    or (easy.fingerprint and set_identity(easy)[:3] == set_identity(hard)[:3])):
        raise BadInput(f"--easy {easy_spec} and --hard {hard_spec} are the same image set: the source model "
                       "would train on the hard test images; give two different sets")


def declared_task(spec: str) -> str:
    """The task a card or an image-set folder declares, read before anything is generated."""
    if Path(spec).is_dir():
        return task_of(imageset.load(spec).meta)
    from harness.data.cards import load_card

    return load_card(spec).task


def check_task(easy: tuple[str, str], hard: tuple[str, str], expected: str | None) -> Task:
    """Both domains ((name, task) each) must declare one task, and the one asked for (`--task`)."""
    (ne, te), (nh, th) = easy, hard
    if expected is not None:
        for role, name, t in (("hard", nh, th), ("easy", ne, te)):
            if t != expected:
                raise BadInput(f"--task {expected}: the {role} data '{name}' are {t} data, not {expected}")
    if te != th:
        raise BadInput(f"easy data '{ne}' are {te} data but hard data '{nh}' are {th} data "
                       "(both domains must be data of one task)")
    return get_task(th)


def model_input(s: imageset.ImageSet, task: Task, size: int, fov: float | None,
                rows: slice = slice(None), stretch: bool = True) -> np.ndarray:
    """The stamps `rows` as the model sees them: resampled to `fov` arcsec (tasks that resample) or
    centre cropped, then stretched (unless `stretch` is False: the caller stretches them itself)."""
    x = np.asarray(s.images[rows])
    if task.resample and fov is not None:
        x = resample(x, _pixel_scale(s), fov, size)
    return prepare(x, size, task.stretch) if stretch else crop_to(x, size)


def _pixel_scale(s: imageset.ImageSet) -> float:
    ps = s.meta.get("pixel_scale")
    if not isinstance(ps, (int, float)) or ps <= 0:
        raise BadInput(f"{s.root or s.name}: meta.json has no positive pixel_scale, needed to resample")
    return float(ps)


def common_fov(easy: imageset.ImageSet, hard: imageset.ImageSet) -> float:
    """The field both domains cover (arcsec): the smaller of their stamps."""
    return min(_pixel_scale(x) * min(x.images.shape[-2:]) for x in (easy, hard))


def prepare_data(preset: Preset, datasets_dir: Path, rt: Runtime, task: str | None = None) -> Prepared:
    """Load/generate both domains, check task, splits and features, and move them to the device."""
    d = preset.data
    # the task is checked before anything is generated
    t = check_task((d.easy, declared_task(d.easy)), (d.hard, declared_task(d.hard)), task)
    _check_card_roles(d.easy, d.hard)
    check_bands(f"--easy {d.easy}", declared_bands(d.easy), f"--hard {d.hard}", declared_bands(d.hard),
                BANDS_HINT)
    easy = load_domain(d.easy, d.n_easy, d.seed, datasets_dir, rt, d.workers)
    hard = load_domain(d.hard, d.n_hard, d.seed + 1, datasets_dir, rt, d.workers)
    _check_distinct(d.easy, d.hard, easy, hard)
    for s, need in ((easy, ("train", "val")), (hard, ("pool", "labelled", "test"))):
        for k in need:
            if len(s.split(k)) == 0:
                raise BadInput(f"{s.root or s.name}: its {k} split is empty (a domain needs images in "
                               f"{', '.join(need)})")
        imageset.check_finite(s)
    tr, va = easy.split("train"), easy.split("val")
    pool, lab, test = hard.split("pool"), hard.split("labelled"), hard.split("test")
    check_bands(f"--easy {d.easy}", set_bands(easy), f"--hard {d.hard}", set_bands(hard), BANDS_HINT)
    # AUROC needs both classes in the evaluation splits too; only their class counts are read here
    for name, s, idx in (("easy train", easy, tr), ("easy val", easy, va), ("hard labelled", hard, lab),
                         ("hard test", hard, test)):
        if (s.labels[idx] < 0).any() or np.unique(s.labels[idx]).size < 2:
            raise BadInput(f"{s.root or s.name}: the {name} split needs labels of at least two classes "
                           f"(has {len(idx)} image(s) of {np.unique(s.labels[idx]).size} class(es))")
    # features: observable columns both domains share, leak-checked on labels the harness may see;
    # none at all for an image-only model (--no-catalog), so a leaky catalog cannot block it
    cols = [c for c in observable_columns(easy.catalog) if c in set(observable_columns(hard.catalog))]
    if not preset.source.use_catalog:
        cols = []
    unknown = [c for c in d.allow_columns if c not in cols]
    if unknown and preset.source.use_catalog:
        raise BadInput(f"--allow-column {unknown[0]}: not an observable catalog column of both domains "
                       f"(they share: {', '.join(cols) or 'none'})")
    near: dict[str, float] = {}   # columns close to the leak threshold: the run records them
    _, cols = feature_matrix(easy.catalog.iloc[tr], easy.labels[tr], cols, allow=d.allow_columns, log=rt.log,
                             near=near)
    feature_matrix(hard.catalog.iloc[lab], hard.labels[lab], cols, allow=d.allow_columns, log=rt.log,
                   near=near)
    fe_all, _ = feature_matrix(easy.catalog, easy.labels, cols, check=False)
    fh_all, _ = feature_matrix(hard.catalog, hard.labels, cols, check=False)
    size = d.image_size
    fov = (t.fov or common_fov(easy, hard)) if t.resample else None
    if not t.resample:
        warn_fields(easy, hard, size, rt.log)
    xe, xh = model_input(easy, t, size, fov), model_input(hard, t, size, fov)
    dev = rt.device
    return Prepared(
        easy=easy, hard=hard, columns=cols,
        source=_device_data(easy, tr, xe, fe_all, dev, True, "easy/train"),
        source_val=_device_data(easy, va, xe, fe_all, dev, True, "easy/val"),
        pool=_device_data(hard, pool, xh, fh_all, dev, False, "hard/pool"),
        pool_labels=torch.from_numpy(hard.labels[pool]).to(dev),
        labelled=_device_data(hard, lab, xh, fh_all, dev, True, "hard/labelled"),
        test=_device_data(hard, test, xh, fh_all, dev, False, "hard/test"),
        image_size=size, fov=fov, near_leaks={c: round(a, 4) for c, a in sorted(near.items()) if c in cols},
    )
