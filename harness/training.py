"""Device-resident training: devices, precision, on-device augmentation, the supervised loop.

Training data live on the device as tensors; batches are drawn by index there and augmented
there, so there are no DataLoader workers on the hot path. bf16 autocast is used on CUDA and
on CPUs with native bf16 (AVX512-BF16 / AMX); fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from harness.api import Batch, DomainData, adamw
from harness.errors import BadInput

Autocast = Callable[[], contextlib.AbstractContextManager]   # a zero-argument factory of the autocast context


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without one is a BadInput."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if spec not in ("cpu", "cuda"):
        raise BadInput(f"--device {spec}: choose auto, cpu or cuda")
    return torch.device(spec)


def make_deterministic() -> None:
    """Deterministic kernels everywhere (`--deterministic`). CPU training is already bitwise repeatable;
    on CUDA, the convolution algorithms cuDNN's heuristics may pick and the atomic adds of some backward
    kernels (scatter/index_add, e.g. in kNN gathers) are not, so this pins cuDNN and asks torch to refuse
    any op without a deterministic kernel. cuBLAS needs its workspace fixed before its first call."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed tensor memory for reuse instead of returning it to the OS.

    By default every activation above 128 KiB is mmap'd and unmapped on free, so each training step
    page-faults its buffers in again (51M minor faults in one demo); keeping them (mmap threshold
    32 MiB, trim threshold 256 MiB) trains ~15-25% more images/s on a 2-core CPU
    (`python -m bench.cpu_speed`). A no-op where there is no glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 256 << 20)
                    and libc.mallopt(m_top_pad, 64 << 20))
    except (OSError, AttributeError):
        return False


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(device: torch.device, spec: str = "auto") -> str:
    if spec not in ("auto", "bf16", "fp32"):
        raise BadInput(f"--precision {spec}: choose auto, bf16 or fp32")
    if spec != "auto":
        return spec
    return "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"


def autocast_factory(device: torch.device, precision: str) -> Autocast:
    """A zero-argument factory of the autocast context for this device and precision."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def configure_cuda(precision: str) -> None:
    """cuDNN's process-wide precision for a CUDA runtime (called by every `Runtime` on CUDA).

    fp32 means IEEE fp32: cuDNN's default TF32 tensor-core maths is turned off for it (on an H200 it
    moved smoke scores by 1.5e-3 against the CPU's fp32); bf16 runs keep it for their fp32 ops.
    cuDNN autotuning (`cudnn.benchmark`) stays off: on the H200 it gained ResNet18's DANN step 1-2% and
    did nothing measurable for the small CNN (`python -m bench.gpu_probe`, bench/RESULTS.md), too little
    for a per-process, timing-dependent choice of algorithms."""
    torch.backends.cudnn.allow_tf32 = precision != "fp32"


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage computes: the device, the resolved precision (and its autocast), and
    how loud it is (progress bars off when `quiet`, stage messages through `log`)."""

    device: torch.device
    precision: str = "fp32"                 # resolved: "bf16" or "fp32" (see resolve_precision)
    quiet: bool = False
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"Runtime needs a resolved precision (bf16 or fp32), got '{self.precision}'")
        if self.device.type == "cuda":
            configure_cuda(self.precision)

    @property
    def autocast(self) -> Autocast:
        return autocast_factory(self.device, self.precision)


class Augment:
    """Label-preserving augmentations for lens stamps, computed on the device.

    weak: random flips and rot90 per sample, small random shifts (per quarter batch).
    strong: weak + PSF-like Gaussian blur, additive noise and per-band flux jitter.
    """

    def __init__(self, max_shift: int = 2, noise: float = 0.1, flux_jitter: float = 0.1,
                 generator: torch.Generator | None = None) -> None:
        self.max_shift, self.noise, self.flux_jitter = max_shift, noise, flux_jitter
        self.g = generator

    def _rand(self, *shape: int, device: torch.device) -> Tensor:
        return torch.rand(*shape, device=device, generator=self.g)

    def __call__(self, x: Tensor, strength: str = "weak") -> Tensor:
        if strength not in ("weak", "strong"):
            raise ValueError(f"augmentation strength '{strength}'")
        b, dev = x.shape[0], x.device
        flip = self._rand(b, 1, 1, 1, device=dev) < 0.5
        k = (self._rand(b, device=dev) * 4).long()
        h, w = x.shape[-2:]
        if h != w:   # every prepared set is square (`harness.data.preprocess.prepare` crops to a size)
            raise ValueError(f"augmentation needs square stamps, got {h}x{w}: rot90 would change the shape")
        # flip, rot90 and the quarter batch's shift are one pixel permutation: one gather
        idx = _dihedral(h, dev)[flip.view(b).long() * 4 + k]
        if self.max_shift:
            idx = torch.gather(idx, 1, self._roll_index(b, h, w, dev))
        x = _permute_pixels(x, idx)
        if strength == "strong":
            x = self._blur(x)
            x = x * (1 + self.flux_jitter * (2 * self._rand(b, x.shape[1], 1, 1, device=dev) - 1))
            x = x + self.noise * torch.randn(x.shape, device=dev, generator=self.g, dtype=x.dtype)
        return x

    def _roll_index(self, b: int, h: int, w: int, dev: torch.device) -> Tensor:
        """(b, h*w) source pixel of each output pixel for `torch.roll` by one random (dy, dx) in
        [-max_shift, max_shift]^2 per quarter batch (the chunks of `x.chunk(4)`), built on the device:
        the shifts are never read back to the host, so a GPU step does not wait on them."""
        size = max(1, -(-b // 4))                  # x.chunk(4): chunks of ceil(b / 4) rows,
        n_chunks = -(-b // size) if b else 4        # so fewer than 4 for small b (4 empty ones at b = 0)
        span = 2 * self.max_shift + 1
        shifts = (self._rand(n_chunks, 2, device=dev) * span).long() - self.max_shift
        s = shifts[torch.arange(b, device=dev) // size]
        rows = (torch.arange(h, device=dev) - s[:, :1]) % h      # roll: out[i] = in[(i - dy) mod h]
        cols = (torch.arange(w, device=dev) - s[:, 1:]) % w
        return (rows[:, :, None] * w + cols[:, None, :]).view(b, h * w)

    def _blur(self, x: Tensor) -> Tensor:
        """Separable 5-tap Gaussian blur with reflect padding, one sigma per batch.

        Each axis is one matmul with a banded (n, n) matrix that includes the reflection: on a CPU
        that is ~20x faster than the depthwise conv2d it replaces (which cost more than a step).
        The sigma and the taps stay on the device (float64), so a GPU step does not wait on them."""
        sigma = 0.5 + self._rand(1, device=x.device).double() * 0.7
        r = torch.arange(-2, 3, dtype=torch.float64, device=x.device)
        k1 = torch.exp(-0.5 * (r / sigma) ** 2)
        k1 = k1 / k1.sum()
        h, w = x.shape[-2:]
        bw = _band(w, k1, x)
        bh = bw if h == w else _band(h, k1, x)   # one band serves both axes of a square stamp
        return bh.T @ (x @ bw)


def _permute_pixels(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, C, H, W) with out[b, :, p] = x[b, :, idx[b, p]] over the flattened pixels p."""
    b, c, h, w = x.shape
    return torch.gather(x.reshape(b, c, h * w), 2, idx.unsqueeze(1).expand(b, c, h * w)).view(b, c, h, w)


@lru_cache(maxsize=8)
def _dihedral(n: int, device: torch.device) -> Tensor:
    """(8, n*n) source pixel of each output pixel for rot90^k of the image, unflipped (rows 0-3) or
    flipped left-right first (rows 4-7): rot90(flip(x), k) == x.flatten()[table[4 + k]]."""
    grid = torch.arange(n * n, device=device).view(n, n)
    return torch.stack([torch.rot90(g, r, dims=(0, 1)).reshape(-1) for g in (grid, grid.flip(-1))
                        for r in range(4)])


def _band(n: int, taps: Tensor, like: Tensor) -> Tensor:
    """(n, n) matrix M with (v @ M) = v convolved with `taps` (float64, on `like`'s device) under
    reflect padding."""
    half = len(taps) // 2
    eye = F.pad(torch.eye(n, dtype=torch.float64, device=taps.device).unsqueeze(0), (half, half),
                mode="reflect")[0]
    band = sum(taps[i] * eye[:, i:i + n] for i in range(len(taps)))
    return band.to(dtype=like.dtype)


def cosine_lr(opt: torch.optim.Optimizer, steps: int, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero over `steps`."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        p = (s - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def progress(steps: int, desc: str, quiet: bool) -> tqdm:
    return tqdm(total=steps, desc=desc, disable=quiet, leave=False, dynamic_ncols=True, mininterval=0.5)


class Throughput:
    """Images/s for the progress bar postfix."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def rate(self, images_done: int) -> float:
        """Images/s since the bar started, given how many images have been trained on so far."""
        return images_done / max(1e-9, time.perf_counter() - self.t0)


def train_classifier(model: nn.Module, data: DomainData, steps: int, batch_size: int, lr: float,
                     weight_decay: float, device: torch.device, autocast: Autocast, augment: Augment,
                     generator: torch.Generator, desc: str = "source", quiet: bool = False) -> nn.Module:
    """Supervised cross-entropy training on device-resident data (the easy-set lens finder)."""
    model.train()
    opt = adamw(model.parameters(), device, lr, weight_decay)
    sched = cosine_lr(opt, steps, warmup=max(1, steps // 20))
    bar, tp = progress(steps, desc, quiet), Throughput()
    for step in range(steps):
        b = data.sample(batch_size, generator)
        x = augment(b.images)
        with autocast():
            loss = F.cross_entropy(model(x, b.catalog), b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{tp.rate(batch_size * (step + 1)):.0f}")
    bar.close()
    model.eval()
    return model


@torch.no_grad()
def infer(fn: Callable[[Batch], Tensor], data: DomainData, batch_size: int, autocast: Autocast) -> Tensor:
    """Apply `fn` (logits or features) to every row of `data`, in order, in eval precision."""
    outs = []
    for b in data.iterate(batch_size):
        with autocast():
            outs.append(fn(b).float())
    return torch.cat(outs)
