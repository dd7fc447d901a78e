"""Typed stage configs and the presets (smoke, demo, full): every default lives here.

Each stage's cache key is a hash of its own config (plus its inputs' keys), so changing, say,
the adaptation steps re-runs only the adapt stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from harness.errors import BadInput


@dataclass(frozen=True)
class DataConfig:
    easy: str = "easy"                 # card name/path for the source domain, or an imported set folder
    hard: str = "hard"                 # card name/path for the target domain, or an imported set folder
    n_easy: int = 3000
    n_hard: int = 3000
    seed: int = 0                      # data seed: the data stay fixed across training seeds
    image_size: int = 64               # model input; larger stamps are centre-cropped
    workers: int = 2
    allow_columns: tuple = ()          # --allow-column: catalog columns the leak guard lets through

    def __str__(self) -> str:
        """The cache-key text; `allow_columns` appears only when set (keys made before it stay valid)."""
        text = repr(self)
        return text.replace(", allow_columns=()", "") if not self.allow_columns else text


@dataclass(frozen=True)
class SSLConfig:
    enabled: bool = True
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    loss: str = "ntxent"               # "ntxent" (SimCLR) or "margin" (the seed's pairwise contrastive loss)
    temperature: float = 0.2
    proj_dim: int = 64


@dataclass(frozen=True)
class SourceConfig:
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    backbone: str = "small"
    use_catalog: bool = True
    init: str = "ssl"                  # "ssl": image branch starts from the SSL encoder; "scratch"
    head: str = "linear"               # "linear", or "seed": BatchNorm + dropout + dense (DeepLense Test I)

    def __str__(self) -> str:
        """The cache-key text; `head` appears only when it is not the default, so keys of stages and
        runs made before `head` existed stay valid."""
        text = repr(self)
        return text.replace(", head='linear'", "") if self.head == "linear" else text


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 300
    batch_size: int = 128
    checkpoints: int = 4               # evenly spaced checkpoints for label-free / 20%-label selection
    selector: str = "im"               # pytorch-adapt validator used for label-free selection: im | snd

    @property
    def eval_batch_size(self) -> int:
        """Inference batch (eval mode, so results do not depend on it): large batches are ~1.5x
        faster per image on a CPU than the training batch."""
        return max(512, 2 * self.batch_size)


@dataclass(frozen=True)
class Preset:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    n_boot: int = 1000                 # bootstrap resamples for metric intervals

    def __post_init__(self) -> None:
        for section in ("ssl", "source", "adapt"):
            cfg = getattr(self, section)
            if cfg.steps < 1 or cfg.batch_size < 1:
                raise BadInput(f"preset {self.name}: {section} needs steps >= 1 and batch_size >= 1")
        if self.adapt.checkpoints < 1:
            raise BadInput(f"preset {self.name}: adapt.checkpoints must be >= 1")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["source"]["head"] == "linear":   # as SourceConfig.__str__: keys made before `head` stay valid
            del d["source"]["head"]
        if not d["data"]["allow_columns"]:
            del d["data"]["allow_columns"]
        else:
            d["data"]["allow_columns"] = list(d["data"]["allow_columns"])
        return d

    def replace(self, section: str, **changes) -> Preset:
        """A copy with some fields of one section changed (used by CLI flags)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


PRESETS: dict[str, Preset] = {
    # The whole pipeline in well under a minute on 2 CPU cores: used by the tests.
    "smoke": Preset(
        name="smoke",
        data=DataConfig(n_easy=240, n_hard=320, workers=1),
        ssl=SSLConfig(steps=15, batch_size=32),
        source=SourceConfig(steps=40, batch_size=64, backbone="tiny"),
        adapt=AdaptConfig(steps=16, batch_size=32, checkpoints=2),
        n_boot=200,
    ),
    # The default: the full comparison (every method x 5 seeds) in under 15 minutes on 2 CPU cores
    # with `--jobs auto` (bench/RESULTS.md). Sizes chosen for that budget: the tiny backbone, a short
    # SSL stage, and 32-image adaptation batches for the methods' full 200 steps (AdaMatch's target
    # batches are still 3x larger, as its recipe says).
    "demo": Preset(
        name="demo",
        data=DataConfig(n_easy=2000, n_hard=5000),   # hard test split: 20% = 1000 images
        ssl=SSLConfig(steps=50, batch_size=64),
        source=SourceConfig(steps=300, batch_size=64, backbone="tiny"),   # see models/backbones.py
        adapt=AdaptConfig(steps=200, batch_size=32),
    ),
    # GPU-sized.
    "full": Preset(
        name="full",
        data=DataConfig(n_easy=20000, n_hard=20000, workers=8),
        ssl=SSLConfig(steps=3000, batch_size=256),
        source=SourceConfig(steps=4000, batch_size=256, backbone="resnet18"),
        adapt=AdaptConfig(steps=3000, batch_size=256, checkpoints=6),
        n_boot=2000,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise BadInput(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def stable_hash(*parts: object, n: int = 16) -> str:
    """Hash of JSON-able parts, stable across runs and machines (the cache key)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]
