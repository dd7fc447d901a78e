"""The lens finder: an image branch and a catalog branch fused by multi-head attention.

This is the DeepLense seed solution's idea done right: the catalog branch sees only observable,
leak-checked features (never `truth_*`), and fusion is real multi-head self-attention over the
two branch embeddings as tokens, not a scalar gate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.models.backbones import make_backbone


class LensFinder(nn.Module):
    """images (B,C,H,W) + catalog (B,F) -> logits (B,K); `embed` gives the fused (B,dim) embedding."""

    def __init__(self, backbone: str = "small", in_channels: int = 3, n_features: int = 0,
                 num_classes: int = 2, use_catalog: bool = True, dim: int = 128, heads: int = 4,
                 head: str = "linear") -> None:
        super().__init__()
        self.backbone = make_backbone(backbone, in_channels)
        if head == "seed":   # the DeepLense seed's classifier: trunk -> BatchNorm -> dropout -> dense
            self.img_proj = nn.Sequential(nn.BatchNorm1d(self.backbone.out_dim), nn.Dropout(0.5),
                                          nn.Linear(self.backbone.out_dim, dim), nn.ReLU(), nn.Dropout(0.5))
        elif head == "linear":
            self.img_proj = nn.Linear(self.backbone.out_dim, dim)
        else:
            raise ValueError(f"unknown head '{head}' (linear | seed)")
        self.use_catalog = bool(use_catalog and n_features > 0)
        self.n_features = n_features
        if self.use_catalog:
            self.cat_mlp = nn.Sequential(nn.Linear(n_features, dim), nn.GELU(), nn.Linear(dim, dim))
            self.type_emb = nn.Parameter(torch.zeros(2, dim))
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm = nn.LayerNorm(dim)
        # standardisation of catalog features, fitted on the source training split
        self.register_buffer("cat_mean", torch.zeros(max(n_features, 1)))
        self.register_buffer("cat_std", torch.ones(max(n_features, 1)))
        self.head = nn.Linear(dim, num_classes)
        self.dim = dim
        self.num_classes = num_classes

    def fit_catalog_scaler(self, catalog: Tensor) -> None:
        """Set the catalog standardisation from training-split features."""
        if self.n_features:
            self.cat_mean.copy_(catalog.float().mean(0))
            self.cat_std.copy_(catalog.float().std(0).clamp_min(1e-6))

    def embed(self, images: Tensor, catalog: Tensor) -> Tensor:
        z = self.img_proj(self.backbone(images))
        if not self.use_catalog:
            return z
        c = self.cat_mlp(((catalog - self.cat_mean) / self.cat_std).to(z.dtype))
        tokens = torch.stack([z, c], dim=1) + self.type_emb.to(z.dtype)
        fused, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.norm(tokens + fused).mean(1)

    def forward(self, images: Tensor, catalog: Tensor) -> Tensor:
        return self.head(self.embed(images, catalog))
