"""Neighbourhood clustering (AaD, Yang et al. 2022; NRC 2021) plus a cross-domain InfoNCE term.

Why: target samples whose embeddings are close usually share a class, so each prediction is
attracted to its k nearest target neighbours (found in a memory bank over the whole pool) and
dispersed from the rest of the batch (a decaying weight, to avoid collapse early). The InfoNCE
term pulls a target embedding toward its nearest source embeddings of the same (pseudo-)class.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import AdaptationMethod, AdaptContext, Batch, DomainData, knn_search, register


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
        self.model = ctx.model
        self.hp = dict(ctx.hparams)
        self.ctx = ctx
        self.steps = max(1, ctx.steps)
        self.opt = ctx.optimizer(self.model.parameters(), lr=self.hp["lr"],
                                 weight_decay=self.hp["weight_decay"])
        n_src = min(len(ctx.source), int(self.hp["source_bank"]))
        perm = torch.randperm(len(ctx.source), device=ctx.device, generator=ctx.generator)
        self.src_rows = perm[:n_src].sort().values
        self.src_labels = ctx.source.labels[self.src_rows]
        self.bank_feat: Tensor | None = None

    @torch.no_grad()
    def _embed_all(self, data: DomainData, rows: Tensor) -> tuple[Tensor, Tensor]:
        feats, probs = [], []
        bs = self.ctx.batch_size
        for b in (data.batch(rows[s:s + bs]) for s in range(0, len(rows), bs)):
            with self.ctx.autocast():
                z = self.model.embed(b.images, b.catalog)
                logits = self.model.head(z)
            feats.append(F.normalize(z.float(), dim=1))
            probs.append(logits.float().softmax(1))
        return torch.cat(feats), torch.cat(probs)

    def on_epoch_start(self, epoch: int) -> None:
        """Refresh the target bank (whole pool) and the source bank, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        all_tgt = torch.arange(len(self.ctx.target), device=self.ctx.device)
        self.bank_feat, self.bank_prob = self._embed_all(self.ctx.target, all_tgt)
        self.src_feat, _ = self._embed_all(self.ctx.source, self.src_rows)
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
        nce = self.cross_domain_nce(f, p.detach().argmax(1))
        loss = cls + attract + beta * disperse + self.hp["nce_weight"] * nce
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        vals = torch.stack([loss.detach(), cls.detach(), attract.detach(), disperse.detach(),
                            nce.detach()]).tolist()
        return dict(zip(("loss", "cls", "attract", "disperse", "nce"), vals))

    def target_neighbours(self, f: Tensor, index: Tensor) -> Tensor:
        """Bank rows of each sample's k nearest target neighbours, itself excluded. (B, k)"""
        k = min(int(self.hp["k"]), len(self.bank_feat) - 1)
        scores, idx = knn_search(f, self.bank_feat, k + 1, self.hp["knn_backend"])
        scores = scores.masked_fill(idx == index[:, None], float("-inf"))
        return idx.gather(1, scores.topk(k, dim=1).indices)

    def cross_domain_nce(self, f: Tensor, pseudo: Tensor) -> Tensor:
        """InfoNCE over the source bank; positives: same-class rows among the k_src nearest."""
        with torch.no_grad():
            _, idx = knn_search(f.detach(), self.src_feat, int(self.hp["k_src"]), self.hp["knn_backend"])
            pos = torch.zeros(len(f), len(self.src_feat), device=f.device, dtype=torch.bool)
            pos.scatter_(1, idx, self.src_labels[idx] == pseudo[:, None])
            has_pos = pos.any(1)
            pos |= ~has_pos[:, None]  # rows without a positive score exactly 0 (no host sync)
        log_prob = (f @ self.src_feat.T / self.hp["temperature"]).log_softmax(1)
        per_row = -torch.logsumexp(log_prob.masked_fill(~pos, float("-inf")), dim=1)
        return (per_row * has_pos).sum() / has_pos.sum().clamp_min(1)
