"""Self-supervised encoder: SimCLR on unlabelled images of both domains.

Trains on easy train + hard pool (never the hard test split), with lens-suited views (rot90,
flips, small shifts, PSF-like blur, noise, flux jitter). The loss comes from
pytorch-metric-learning: NT-Xent (SimCLR, default) or the seed solution's pairwise margin
contrastive loss. Its quality is reported as a linear-probe AUROC on the easy validation split.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from harness.api import DomainData, adamw
from harness.config import SSLConfig
from harness.errors import BadInput
from harness.metrics import score_auroc
from harness.models import make_backbone
from harness.training import Augment, Throughput, cosine_lr, infer, progress


class SimCLR(nn.Module):
    """Backbone + 2-layer projection head; only the backbone is kept afterwards."""

    def __init__(self, backbone: str, in_channels: int, proj_dim: int) -> None:
        super().__init__()
        self.backbone = make_backbone(backbone, in_channels)
        d = self.backbone.out_dim
        self.proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.backbone(x))


def contrastive_loss(name: str, temperature: float) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_metric_learning import losses
    if name == "ntxent":
        return losses.NTXentLoss(temperature=temperature)
    if name == "margin":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    raise BadInput(f"unknown SSL loss '{name}' (choose ntxent or margin)")


def train_ssl(images: Tensor, cfg: SSLConfig, backbone: str, device: torch.device, autocast: Callable,
              generator: torch.Generator, quiet: bool = False) -> nn.Module:
    """Train SimCLR on device-resident unlabelled `images`; return the trained backbone."""
    model = SimCLR(backbone, images.shape[1], cfg.proj_dim).to(device).to(memory_format=torch.channels_last)
    loss_fn = contrastive_loss(cfg.loss, cfg.temperature)
    strong = Augment(max_shift=3, noise=0.2, flux_jitter=0.15, generator=generator)
    opt = adamw(model.parameters(), device, cfg.lr)
    sched = cosine_lr(opt, cfg.steps, warmup=max(1, cfg.steps // 20))
    bar, tp = progress(cfg.steps, "ssl", quiet), Throughput()
    model.train()
    n = images.shape[0]
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), device=device, generator=generator)
        x = images[idx]
        views = torch.cat([strong(x, "strong"), strong(x, "strong")])
        pair = torch.arange(cfg.batch_size, device=device).repeat(2)
        with autocast():
            z = model(views)
        loss = loss_fn(z.float(), pair)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
        if step % 10 == 0 or step == cfg.steps - 1:
            img_s = tp.rate(2 * cfg.batch_size * (step + 1))
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{img_s:.0f}")
    bar.close()
    return model.backbone.eval()


def embed(backbone: nn.Module, images: Tensor, autocast: Callable, batch_size: int = 512) -> np.ndarray:
    """Frozen backbone features of every image (through the harness's batched `infer`)."""
    backbone.eval()
    data = DomainData(images, images.new_zeros((images.shape[0], 0)))
    return infer(lambda b: backbone(b.images), data, batch_size, autocast).cpu().numpy()


def linear_probe_auroc(backbone: nn.Module, train_x: Tensor, train_y: np.ndarray, val_x: Tensor,
                       val_y: np.ndarray, autocast: Callable) -> float:
    """Logistic regression on frozen features (easy train), AUROC on easy validation."""
    sc = StandardScaler()
    ftr = sc.fit_transform(embed(backbone, train_x, autocast))
    fva = sc.transform(embed(backbone, val_x, autocast))
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(ftr, train_y)
    probs = clf.predict_proba(fva)
    return score_auroc(val_y, probs[:, 1] if probs.shape[1] == 2 else probs)
