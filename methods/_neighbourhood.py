"""Building blocks of neighbourhood methods (AaD, NRC, cross-domain contrastive): banks and InfoNCE.

Private (the leading `_` keeps the registry from importing it as a method). `contrastive_knn.py`
holds the method and its step; this module holds its pieces: embedding a whole domain into a memory
bank, writing a batch into it, k-NN search that excludes the query's own row, AaD's two terms (pure,
unit-tested by hand), and InfoNCE against a labelled bank with k-NN-restricted positives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DomainData, knn_search


@torch.no_grad()
def embed_rows(model: nn.Module, data: DomainData, rows: Tensor, batch_size: int,
               autocast: Callable[[], contextlib.AbstractContextManager]) -> tuple[Tensor, Tensor]:
    """L2-normalised embeddings and softmax outputs (float32) of `data[rows]`, in order, batch by batch."""
    feats, probs = [], []
    for b in (data.batch(rows[s:s + batch_size]) for s in range(0, len(rows), batch_size)):
        with autocast():
            z = model.embed(b.images, b.catalog)
            logits = model.head(z)
        feats.append(F.normalize(z.float(), dim=1))
        probs.append(logits.float().softmax(1))
    return torch.cat(feats), torch.cat(probs)


def last_occurrence(index: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct values of `index` and the position of each one's last occurrence, so that bank rows
    drawn twice are written once, by the last copy, deterministically (index_put with repeats is not)."""
    rows, inv = torch.unique(index, return_inverse=True)
    last = torch.zeros_like(rows).scatter_reduce(0, inv, torch.arange(len(inv), device=inv.device),
                                                 "amax", include_self=False)
    return rows, last


def knn_excluding_self(f: Tensor, bank: Tensor, index: Tensor, k: int, backend: str = "auto") -> Tensor:
    """Rows of `bank` nearest each query `f`, the query's own row `index` excluded. (B, k)"""
    scores, idx = knn_search(f, bank, k + 1, backend)
    scores = scores.masked_fill(idx == index[:, None], float("-inf"))
    return idx.gather(1, scores.topk(k, dim=1).indices)


def aad_terms(p: Tensor, neighbour_probs: Tensor) -> tuple[Tensor, Tensor]:
    """(attraction, dispersion) of AaD for batch softmax `p` (B, C) and bank scores (B, K, C)."""
    attract = -(p[:, None, :] * neighbour_probs).sum(-1).sum(1).mean()
    off_diag = 1.0 - torch.eye(len(p), device=p.device, dtype=p.dtype)
    disperse = ((p @ p.T) * off_diag).sum(-1).mean()
    return attract, disperse


def bank_infonce(f: Tensor, pseudo: Tensor, bank: Tensor, bank_labels: Tensor, k: int, temperature: float,
                 backend: str = "auto") -> Tensor:
    """InfoNCE of queries `f` over `bank`; positives: rows of the query's (pseudo-)class among its k nearest.

    Queries with no positive add exactly 0 and the mean runs over the others (no host sync).
    """
    with torch.no_grad():
        _, idx = knn_search(f.detach(), bank, k, backend)
        pos = torch.zeros(len(f), len(bank), device=f.device, dtype=torch.bool)
        pos.scatter_(1, idx, bank_labels[idx] == pseudo[:, None])
        has_pos = pos.any(1)
        pos |= ~has_pos[:, None]  # rows without a positive score exactly 0 (no host sync)
    log_prob = (f @ bank.T / temperature).log_softmax(1)
    per_row = -torch.logsumexp(log_prob.masked_fill(~pos, float("-inf")), dim=1)
    return (per_row * has_pos).sum() / has_pos.sum().clamp_min(1)
