"""On-device augmentation (`training.Augment`), the warm-up + cosine schedule, and `Runtime`."""

from __future__ import annotations

import math

import pytest
import torch

from harness.training import Augment, Runtime, cosine_lr


def _images(n: int = 16, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Distinct values everywhere, so any moved pixel is visible."""
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of one (C, H, W) stamp."""
    out = []
    for img in (x, x.flip(-1)):
        out += [torch.rot90(img, r, dims=(-2, -1)) for r in range(4)]
    return out


def _aug(seed: int, **kw) -> Augment:
    return Augment(generator=torch.Generator().manual_seed(seed), **kw)


def test_weak_without_shifts_is_a_flip_or_rotation_of_each_sample() -> None:
    x = _images(32)
    y = _aug(0, max_shift=0)(x, "weak")
    assert y.shape == x.shape and y.dtype == x.dtype
    used = set()
    for i in range(len(x)):
        hits = [k for k, t in enumerate(_dihedral(x[i])) if torch.equal(y[i], t)]
        assert hits, f"sample {i} is not a flip/rotation of its input"
        used.add(hits[0])
    assert len(used) > 1  # it does augment: not every sample left as it was


def test_weak_shift_is_a_small_roll_shared_by_each_quarter_batch() -> None:
    x, max_shift = _images(16), 2
    y = _aug(1, max_shift=max_shift)(x, "weak")
    shifts = [(a, b) for a in range(-max_shift, max_shift + 1) for b in range(-max_shift, max_shift + 1)]
    for chunk in torch.arange(len(x)).chunk(4):
        ok = [s for s in shifts
              if all(any(torch.equal(y[i], torch.roll(t, s, dims=(-2, -1))) for t in _dihedral(x[i]))
                     for i in chunk.tolist())]
        assert ok, f"quarter {chunk.tolist()}: no single shift in [-2, 2]^2 explains it"


def _values(t: torch.Tensor) -> torch.Tensor:
    """The multiset of pixel values of each sample and band (sorted)."""
    return t.flatten(2).sort(-1).values


def test_weak_keeps_each_sample_pixel_values_strong_does_not() -> None:
    """Weak only moves pixels (flips, rot90, wrapping rolls); strong blurs, jitters and adds noise."""
    x = _images(16)
    weak = _aug(2)(x, "weak")
    strong = _aug(2)(x, "strong")
    assert torch.equal(_values(weak), _values(x))
    assert strong.shape == x.shape and torch.isfinite(strong).all()
    assert not torch.equal(_values(strong), _values(x))
    assert not torch.allclose(strong, weak, atol=1e-3)


def test_augment_is_deterministic_given_a_seeded_generator() -> None:
    x = _images(16)
    for strength in ("weak", "strong"):
        a, b = _aug(3)(x, strength), _aug(3)(x, strength)
        assert torch.equal(a, b), strength
        assert not torch.equal(a, _aug(4)(x, strength)), strength


def test_unknown_strength_is_refused() -> None:
    with pytest.raises(ValueError, match="strength"):
        _aug(0)(_images(2), "medium")


def test_non_square_stamps_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="square stamps, got 8x6"):
        _aug(0)(torch.randn(4, 3, 8, 6))


def _lrs(steps: int, warmup: int, n: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_lr(opt, steps, warmup=warmup)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_lr_warms_up_linearly_then_decays_to_zero() -> None:
    # warmup 2 of 10 steps: (s + 1) / 2 for s < 2, then 0.5 (1 + cos(pi (s - 2) / 8)), 0 from step 10 on
    # cos(pi/8) = 0.9238795325, cos(pi/4) = 0.7071067812, cos(3 pi/8) = 0.3826834324
    want = [0.5, 1.0, 1.0, 0.9619397663, 0.8535533906, 0.6913417162,
            0.5, 0.3086582838, 0.1464466094, 0.0380602337, 0.0, 0.0]
    assert _lrs(10, 2, 12) == pytest.approx(want, abs=1e-9)


def test_cosine_lr_warmup_steps_are_equal_and_no_warmup_starts_at_full_lr() -> None:
    assert _lrs(20, 4, 5) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert _lrs(4, 0, 5) == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                           0.5 * (1 - math.cos(math.pi / 4)), 0.0])


def test_runtime_needs_a_resolved_precision() -> None:
    assert Runtime(torch.device("cpu"), "fp32").autocast is not None
    with pytest.raises(ValueError, match="resolved precision"):
        Runtime(torch.device("cpu"), "auto")


def test_a_cuda_runtime_turns_tf32_off_for_fp32_only() -> None:
    """fp32 turns cuDNN's TF32 off, bf16 leaves it on, a CPU runtime leaves it alone. Only the
    process-wide flag is set, so this runs without a GPU."""
    cudnn = torch.backends.cudnn
    saved = cudnn.allow_tf32
    try:
        Runtime(torch.device("cuda"), "fp32")
        assert cudnn.allow_tf32 is False
        Runtime(torch.device("cuda"), "bf16")
        assert cudnn.allow_tf32 is True
        cudnn.allow_tf32 = False
        Runtime(torch.device("cpu"), "bf16")
        assert cudnn.allow_tf32 is False
    finally:
        cudnn.allow_tf32 = saved


def test_blur_equals_a_reflect_padded_separable_gaussian_conv() -> None:
    # the matmul blur must be the depthwise convolution it replaces, edges (reflection) included
    import torch.nn.functional as F

    x = torch.randn(5, 3, 20, 16)
    a = Augment(generator=torch.Generator().manual_seed(4))
    got = a._blur(x)
    sigma = 0.5 + float(torch.rand(1, generator=torch.Generator().manual_seed(4))) * 0.7
    k = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    kx, ky = k.view(1, 1, 1, 5).repeat(3, 1, 1, 1), k.view(1, 1, 5, 1).repeat(3, 1, 1, 1)
    want = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), kx, groups=3)
    want = F.conv2d(F.pad(want, (0, 0, 2, 2), mode="reflect"), ky, groups=3)
    assert torch.allclose(got, want, atol=1e-5)


def test_weak_gather_equals_flip_then_rot90_per_sample() -> None:
    # the one-gather weak augmentation must apply exactly flip-then-rot90 with the same random draws
    x = torch.randn(16, 3, 12, 12)
    got = Augment(max_shift=0, generator=torch.Generator().manual_seed(9))(x, "weak")
    g = torch.Generator().manual_seed(9)
    flip = torch.rand(16, 1, 1, 1, generator=g) < 0.5
    k = (torch.rand(16, generator=g) * 4).long()
    want = torch.stack([torch.rot90(xi.flip(-1) if f else xi, int(r), dims=(-2, -1))
                        for xi, f, r in zip(x, flip.view(-1), k)])
    assert torch.equal(got, want)


def _reference_augment(a: Augment, x: torch.Tensor, strength: str) -> torch.Tensor:
    """The augmentation written the plain way, with the same random draws in the same order: flip,
    rot90, then `torch.roll` of each quarter batch by shifts read back to the host, then a blur
    whose sigma and taps are host floats, then flux jitter and noise."""
    import torch.nn.functional as F

    b, (h, w) = x.shape[0], x.shape[-2:]
    flip = a._rand(b, 1, 1, 1, device=x.device) < 0.5
    k = (a._rand(b, device=x.device) * 4).long()
    x = torch.stack([torch.rot90(xi.flip(-1) if f else xi, int(r), dims=(-2, -1))
                     for xi, f, r in zip(x, flip.view(b).tolist(), k.tolist())])
    chunks = x.chunk(4)
    span = 2 * a.max_shift + 1
    shifts = (a._rand(len(chunks), 2, device=x.device) * span).long() - a.max_shift
    x = torch.cat([torch.roll(c, (int(s[0]), int(s[1])), dims=(-2, -1)) for c, s in zip(chunks, shifts)])
    if strength == "strong":
        sigma = 0.5 + float(a._rand(1, device=x.device)) * 0.7
        taps = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=torch.float64) / sigma) ** 2)
        taps = (taps / taps.sum()).tolist()

        def band(n: int) -> torch.Tensor:
            eye = F.pad(torch.eye(n, dtype=torch.float64).unsqueeze(0), (2, 2), mode="reflect")[0]
            return sum(t * eye[:, i:i + n] for i, t in enumerate(taps)).to(x.dtype)

        x = band(h).T @ (x @ band(w))
        x = x * (1 + a.flux_jitter * (2 * a._rand(b, x.shape[1], 1, 1, device=x.device) - 1))
        x = x + a.noise * torch.randn(x.shape, device=x.device, generator=a.g, dtype=x.dtype)
    return x


@pytest.mark.parametrize("n,size", [(1, 8), (2, 8), (5, 8), (7, 12), (16, 64), (96, 64)])
def test_one_gather_augmentation_is_the_plain_one_bit_for_bit(n: int, size: int) -> None:
    """Shifts folded into the flip/rot90 gather and a blur built on the device (no value read back to
    the host, so a GPU never waits) must give exactly the plain per-chunk roll and host-side blur,
    quarter batches of uneven size included."""
    x = _images(n, size=size, seed=n)
    for strength in ("weak", "strong"):
        for seed in range(3):
            got = _aug(seed)(x, strength)
            want = _reference_augment(_aug(seed), x, strength)
            assert torch.equal(got, want), (strength, seed)
