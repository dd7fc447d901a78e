"""AaD, "Attracting and Dispersing" (Yang et al. 2022, NeurIPS), with faiss neighbours; source-free.

Why: target samples whose embeddings are close usually share a class, so each prediction is attracted
to those of its K nearest target neighbours, and dispersed from the rest of the batch (with a decaying
weight) so that the attraction cannot collapse everything onto one class. As the reference
(github.com/Albert0147/AaD_SFDA, `tar_adaptation.py`):
- memory banks of L2-normalised features and softmax scores over the whole target pool, filled once by
  an eval-mode pass and then written at the batch's indices every step (never refreshed wholesale);
- attraction -sum_{k in K nearest} p_i·s_k, summed over the K neighbours (self excluded; found with
  `harness.api.knn_search`, faiss) and averaged over the batch;
- dispersion sum_{j != i} p_i·p_j over the other batch members, averaged over the batch, with the
  gradient through both factors, weighted by alpha·(1+10p)^-beta;
- no source loss (source-free).
K=5, alpha=1, beta=5: the paper's VisDA-2017 setting (synthetic -> real images), its closest analogue
to simulated -> survey lenses. Recipe as the reference: nesterov SGD (momentum 0.9), lr 1e-3, weight
decay 1e-3, Ganin's annealing, the backbone at 0.1x, projection and head at 1x.
Ablations (off by default): `nce_weight`, the cross-domain InfoNCE of this harness's earlier version
(a target embedding pulled to its nearest source embeddings of its pseudo-class), and `source_weight`,
a source CE. AaD's two terms (`aad_terms`), the bank and k-NN pieces and the InfoNCE loss live in
`methods/_neighbourhood.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch, register, scalars
from methods._neighbourhood import aad_terms, bank_infonce, embed_rows, knn_excluding_self, last_occurrence


@register
class ContrastiveKNN(AdaptationMethod):
    """AaD (source-free): attract predictions to k-NN bank scores, disperse them across the batch."""

    name = "contrastive_knn"
    hparams: ClassVar[dict[str, Any]] = {
        **SGD_RECIPE, "lr": 1e-3,
        "k": 5, "alpha": 1.0, "beta": 5.0,   # VisDA setting; dispersion weight alpha·(1+10p)^-beta
        "nce_weight": 0.0, "source_weight": 0.0,   # ablations, off
        "k_src": 10, "temperature": 0.1, "source_bank": 8192,   # the InfoNCE ablation's settings
        "knn_backend": "auto",
    }

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.steps = max(1, ctx.steps)
        n_src = min(len(ctx.source), int(self.hp["source_bank"]))
        self.src_rows = torch.randperm(len(ctx.source), device=ctx.device, generator=ctx.generator)[:n_src]
        self.src_labels = ctx.source.labels[self.src_rows]
        self.bank_feat: Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        """Fill the target banks once (eval mode); the InfoNCE ablation's source bank every pass."""
        was_training, c = self.model.training, self.ctx
        self.model.eval()
        if self.bank_feat is None:
            rows = torch.arange(len(c.target), device=c.device)
            self.bank_feat, self.bank_prob = embed_rows(self.model, c.target, rows, c.batch_size, c.autocast)
        if self.hp["nce_weight"]:
            self.src_feat, _ = embed_rows(self.model, c.source, self.src_rows, c.batch_size, c.autocast)
        self.model.train(was_training)

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        if self.bank_feat is None:
            self.on_epoch_start(0)
        uses_source = bool(self.hp["source_weight"])
        parts = [src, tgt] if uses_source else [tgt]
        z = self.model.embed(torch.cat([b.images for b in parts]), torch.cat([b.catalog for b in parts]))
        logits = self.model.head(z).float()
        n = len(src) if uses_source else 0
        f, p = F.normalize(z[n:].float(), dim=1), logits[n:].softmax(1)
        with torch.no_grad():
            rows, last = last_occurrence(tgt.index)   # a row drawn twice: its last copy wins
            self.bank_feat[rows] = f.detach()[last]
            self.bank_prob[rows] = p.detach()[last]
            neigh = self.bank_prob[self.target_neighbours(f.detach(), tgt.index)]   # (B, K, C)
        attract, disperse = aad_terms(p, neigh)
        weight = self.hp["alpha"] * (1.0 + 10.0 * step / self.steps) ** (-self.hp["beta"])
        loss = attract + weight * disperse
        extra = {}
        if uses_source:
            extra["cls"] = F.cross_entropy(logits[:n], src.labels)
            loss = loss + self.hp["source_weight"] * extra["cls"]
        if self.hp["nce_weight"]:
            extra["nce"] = bank_infonce(f, p.detach().argmax(1), self.src_feat, self.src_labels,
                                        int(self.hp["k_src"]), self.hp["temperature"], self.hp["knn_backend"])
            loss = loss + self.hp["nce_weight"] * extra["nce"]
        self.step(loss)
        return scalars(loss=loss, attract=attract, disperse=disperse, disperse_weight=weight, **extra)

    def target_neighbours(self, f: Tensor, index: Tensor) -> Tensor:
        """Bank rows of each sample's K nearest target neighbours, itself excluded. (B, K)"""
        k = min(int(self.hp["k"]), len(self.bank_feat) - 1)
        return knn_excluding_self(f, self.bank_feat, index, k, self.hp["knn_backend"])
