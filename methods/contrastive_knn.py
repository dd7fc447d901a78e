"""Neighbourhood clustering (AaD, Yang et al. 2022; NRC 2021) plus a cross-domain InfoNCE term.

Why: target samples whose embeddings are close usually share a class, so each prediction is
attracted to its k nearest target neighbours (found in a memory bank over the whole pool) and
dispersed from the rest of the batch (a decaying weight, to avoid collapse early). The InfoNCE
term pulls a target embedding toward its nearest source embeddings of the same (pseudo-)class.
The bank embedding and the InfoNCE loss are generic, in `methods/_neighbourhood.py`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import AdaptationMethod, AdaptContext, Batch, knn_search, register, scalars
from methods._neighbourhood import bank_infonce, embed_rows


@register
class ContrastiveKNN(AdaptationMethod):
    """AaD attract/disperse over a target memory bank, cross-domain InfoNCE, source CE."""

    name = "contrastive_knn"
    hparams: ClassVar[dict[str, Any]] = {
        "lr": 3e-4,
        "weight_decay": 1e-4,
        "k": 5,                   # target neighbours attracted to
        "beta": 1.0,              # initial dispersion weight ...
        "beta_decay": 2.0,        # ... times (1 + 10 p) ** -beta_decay
        "k_src": 10,              # source neighbours searched for positives
        "nce_weight": 0.5,
        "temperature": 0.1,
        "source_bank": 8192,      # source rows in the cross-domain bank (cap)
        "knn_backend": "auto",
    }

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.steps = max(1, ctx.steps)
        self.opt = ctx.optimizer(self.model.parameters())  # AdamW at hparams' lr and weight_decay
        n_src = min(len(ctx.source), int(self.hp["source_bank"]))
        perm = torch.randperm(len(ctx.source), device=ctx.device, generator=ctx.generator)
        self.src_rows = perm[:n_src].sort().values
        self.src_labels = ctx.source.labels[self.src_rows]
        self.bank_feat: Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        """Refresh the target bank (whole pool) and the source bank, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        c = self.ctx
        all_tgt = torch.arange(len(c.target), device=c.device)
        self.bank_feat, self.bank_prob = embed_rows(self.model, c.target, all_tgt, c.batch_size, c.autocast)
        self.src_feat, _ = embed_rows(self.model, c.source, self.src_rows, c.batch_size, c.autocast)
        self.model.train(was_training)

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        if self.bank_feat is None:
            self.on_epoch_start(0)
        b = len(src)
        z = self.model.embed(torch.cat([src.images, tgt.images]), torch.cat([src.catalog, tgt.catalog]))
        logits = self.model.head(z).float()
        cls = F.cross_entropy(logits[:b], src.labels)
        f, p = F.normalize(z[b:].float(), dim=1), logits[b:].softmax(1)
        with torch.no_grad():
            # rows drawn twice: the last copy wins, deterministically (index_put with repeats does not)
            rows, inv = torch.unique(tgt.index, return_inverse=True)
            last = torch.zeros_like(rows).scatter_reduce(0, inv, torch.arange(len(inv), device=inv.device),
                                                         "amax", include_self=False)
            self.bank_feat[rows] = f.detach()[last]
            self.bank_prob[rows] = p.detach()[last]
            neigh = self.bank_prob[self.target_neighbours(f.detach(), tgt.index)]   # (B, k, K)
        attract = -(p[:, None, :] * neigh).sum(-1).mean()
        off_diag = 1.0 - torch.eye(len(tgt), device=p.device)
        disperse = ((p @ p.T) * off_diag).sum() / off_diag.sum().clamp_min(1.0)
        beta = self.hp["beta"] * (1.0 + 10.0 * step / self.steps) ** (-self.hp["beta_decay"])
        nce = bank_infonce(f, p.detach().argmax(1), self.src_feat, self.src_labels, int(self.hp["k_src"]),
                           self.hp["temperature"], self.hp["knn_backend"])
        loss = cls + attract + beta * disperse + self.hp["nce_weight"] * nce
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return scalars(loss=loss, cls=cls, attract=attract, disperse=disperse, nce=nce)

    def target_neighbours(self, f: Tensor, index: Tensor) -> Tensor:
        """Bank rows of each sample's k nearest target neighbours, itself excluded. (B, k)"""
        k = min(int(self.hp["k"]), len(self.bank_feat) - 1)
        scores, idx = knn_search(f, self.bank_feat, k + 1, self.hp["knn_backend"])
        scores = scores.masked_fill(idx == index[:, None], float("-inf"))
        return idx.gather(1, scores.topk(k, dim=1).indices)
