"""Exact inner-product k-nearest-neighbour search behind one function.

Methods that keep a memory bank (contrastive_knn, SND-style validators) call `knn_search`; which
engine answers is an implementation detail:

- faiss GPU (`GpuIndexFlatIP`) when faiss was built with CUDA and the tensors live on CUDA;
- faiss CPU (the `IndexFlatIP` brute-force kernel, BLAS) for CPU tensors;
- torch matmul + topk otherwise (CUDA tensors without faiss-gpu, or no faiss at all).

All three are exact searches, so they return the same neighbours up to floating-point ties.
Inputs are expected to be L2-normalised, so the inner product is the cosine similarity.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["faiss_available", "faiss_gpu_available", "knn_search"]

# Queries per torch chunk are capped so a (chunk, N) score matrix stays near 256 MiB of fp32 on the
# CPU and 1 GiB on CUDA, where fewer, larger chunks search a 1M bank for 256 queries in 4.7 ms instead
# of 6.25 ms on an H200, with the same neighbours (`python -m bench.gpu_probe`, bench/RESULTS.md).
_TORCH_SCORE_ELEMS = 1 << 26
_TORCH_SCORE_ELEMS_CUDA = 1 << 28
# Rows narrower than this go straight to `torch.topk`; `row_topk`'s two passes pay off on wide ones.
_BLOCKED_TOPK_MIN = 1 << 15


@functools.cache
def _faiss() -> Any | None:
    try:
        import faiss
    except Exception:  # noqa: BLE001 - any import failure means "use torch"
        return None
    # faiss's OpenMP pool otherwise takes every core and fights torch's intra-op pool.
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    # Recent faiss builds only switch the flat search to BLAS above 128k queries; for our
    # per-step batches (tens to hundreds of queries over a large bank) BLAS is 4-5x faster than
    # the SIMD scan (measured: 64 queries x 100k x 128 on 2 cores, 54 ms -> 12 ms).
    if hasattr(faiss, "cvar") and hasattr(faiss.cvar, "distance_compute_blas_threshold"):
        faiss.cvar.distance_compute_blas_threshold = 16
    return faiss


def faiss_available() -> bool:
    return _faiss() is not None


def faiss_gpu_available() -> bool:
    faiss = _faiss()
    return (faiss is not None and hasattr(faiss, "StandardGpuResources")
            and getattr(faiss, "get_num_gpus", lambda: 0)() > 0)


@functools.cache
def _gpu_resources() -> Any:
    faiss = _faiss()
    importlib.import_module("faiss.contrib.torch_utils")  # lets GPU indexes take CUDA tensors in place

    res = faiss.StandardGpuResources()
    res.setTempMemory(256 << 20)  # the default reserves a large share of the card
    return res


def row_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`torch.topk(scores, k, dim=1)` in two passes for wide rows, with the same values.

    Cut each row into blocks: each of the row's k largest entries lies in one of the k blocks with
    the largest maxima (a block left out has k blocks above it whose maxima are all at least as
    large, so none of its entries can be among the k). One max-pass over the row, a top-k over the
    block maxima and one over k blocks replace a selection over the whole row: 7.45x on a 2-core CPU
    at 1M columns, 1.74x at 100k (`python -m bench.cpu_speed`). The indices differ from
    `torch.topk`'s only where scores tie, as any two top-k kernels may.
    """
    q, n = scores.shape
    block = max(64, math.isqrt(max(1, n // max(1, k))))   # ~sqrt(n/k): both small top-ks stay small
    nb = n // block
    if n < _BLOCKED_TOPK_MIN or nb < 8 * k:   # k blocks of candidates would be over 1/8 of the row
        values, idx = torch.topk(scores, k, dim=1)
        return values, idx
    body = scores[:, :nb * block].view(q, nb, block)
    top = body.amax(2).topk(k, dim=1).indices                                 # (q, k) blocks
    cand = body.gather(1, top[:, :, None].expand(q, k, block)).reshape(q, k * block)
    where = (top[:, :, None] * block + torch.arange(block, device=scores.device)).reshape(q, k * block)
    if nb * block < n:   # the ragged tail joins the candidates whole
        cand = torch.cat([cand, scores[:, nb * block:]], 1)
        where = torch.cat([where, torch.arange(nb * block, n, device=scores.device).expand(q, -1)], 1)
    values, j = cand.topk(k, dim=1)
    return values, where.gather(1, j)


def _torch_knn(queries: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    q, b = queries.float(), bank.float()
    elems = _TORCH_SCORE_ELEMS_CUDA if q.is_cuda else _TORCH_SCORE_ELEMS
    step = max(1, elems // max(1, b.shape[0]))
    parts = [row_topk(q[s:s + step] @ b.T, k) for s in range(0, q.shape[0], step)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _faiss_cpu_knn(queries: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    faiss = _faiss()
    q = queries.detach().float().cpu().contiguous().numpy()
    b = bank.detach().float().cpu().contiguous().numpy()
    # `faiss.knn` is the brute-force kernel behind `IndexFlatIP.search`, run on the bank in place:
    # the bank changes every step, so copying it into a fresh index per call is pure overhead.
    if hasattr(faiss, "knn"):
        scores, idx = faiss.knn(q, b, k, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexFlatIP(b.shape[1])
        index.add(b)
        scores, idx = index.search(q, k)
    return (torch.from_numpy(scores).to(queries.device), torch.from_numpy(idx).to(queries.device))


def _faiss_gpu_knn(queries: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    faiss = _faiss()
    cfg = faiss.GpuIndexFlatConfig()
    cfg.device = bank.device.index or 0
    index = faiss.GpuIndexFlatIP(_gpu_resources(), bank.shape[1], cfg)
    index.add(bank.detach().float().contiguous())
    scores, idx = index.search(queries.detach().float().contiguous(), k)
    return scores, idx.long()


def knn_search(queries: Tensor, bank: Tensor, k: int, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """The k bank rows with the largest inner product with each query.

    queries (Q, D), bank (N, D) -> (scores (Q, k) float32, indices (Q, k) int64), both on the
    queries' device, best first. `backend`: "auto", "faiss" or "torch". k is clipped to N.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"knn_search wants (Q, D) and (N, D); "
                         f"got {tuple(queries.shape)}, {tuple(bank.shape)}")
    k = min(int(k), bank.shape[0])
    if k <= 0 or queries.shape[0] == 0:
        empty = queries.new_zeros((queries.shape[0], max(k, 0)), dtype=torch.float32)
        return empty, empty.long()
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"unknown knn backend '{backend}' (auto, faiss, torch)")
    if backend == "faiss" and not faiss_available():
        raise RuntimeError("knn_search(backend='faiss') but faiss cannot be imported")
    on_cuda = queries.is_cuda and bank.is_cuda
    if backend == "auto":
        backend = "faiss" if faiss_available() and (not on_cuda or faiss_gpu_available()) else "torch"
    with torch.no_grad():
        if backend == "torch":
            return _torch_knn(queries.detach(), bank.detach(), k)
        if on_cuda and faiss_gpu_available():
            return _faiss_gpu_knn(queries, bank, k)
        return _faiss_cpu_knn(queries, bank, k)
