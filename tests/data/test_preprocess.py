"""`harness.data.preprocess.prepare`: what the models see, per stamp and band, whatever the units."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.preprocess import crop_or_pad, normalise, prepare
from harness.errors import BadInput


def _stamps(n: int = 5, c: int = 3, size: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, size, size))
    x[:, :, size // 2, size // 2] += 20.0          # a bright centre, so crops and stretches show
    return x


def test_larger_stamps_are_centre_cropped_smaller_ones_centre_padded() -> None:
    x = np.arange(2 * 1 * 6 * 6, dtype=np.float64).reshape(2, 1, 6, 6)
    assert np.array_equal(crop_or_pad(x, 4), x[:, :, 1:5, 1:5])
    assert np.array_equal(crop_or_pad(x, 6), x)
    padded = crop_or_pad(x, 10)
    assert padded.shape == (2, 1, 10, 10)
    assert np.array_equal(padded[:, :, 2:8, 2:8], x)
    padded[:, :, 2:8, 2:8] = 0
    assert not padded.any()                        # only zeros around the stamp


def test_prepare_gives_float32_finite_stamps_of_the_model_size() -> None:
    for size in (8, 12, 16):
        out = prepare(_stamps(), size)
        assert out.shape == (5, 3, size, size) and out.dtype == np.float32
        assert np.isfinite(out).all()


def test_prepare_refuses_images_that_are_not_n_c_h_w() -> None:
    with pytest.raises(BadInput, match=r"\(N, C, H, W\)"):
        prepare(np.zeros((4, 8, 8)), 8)


def test_each_stamp_and_band_is_normalised_on_its_own() -> None:
    """Units do not matter per (stamp, band): a positive scale and an offset leave the output as is,
    and changing one stamp's band changes nothing else."""
    x = _stamps()
    base = prepare(x, 12)
    y = x.copy()
    y[2, 1] = 1e4 * y[2, 1] + 7.0                  # stamp 2, band 1 in other units
    out = prepare(y, 12)
    np.testing.assert_allclose(out[2, 1], base[2, 1], rtol=1e-5, atol=1e-5)
    mask = np.ones(base.shape, bool)
    mask[2, 1] = False
    assert np.array_equal(out[mask], base[mask])
    assert not np.allclose(out[2, 1], np.arcsinh(y[2, 1]))   # it is not a plain asinh of the raw values


def test_no_statistic_is_shared_across_stamps() -> None:
    x = _stamps(n=7)
    whole = normalise(x)
    assert np.array_equal(normalise(x, chunk=2), whole)
    for i in range(len(x)):
        assert np.array_equal(normalise(x[i:i + 1])[0], whole[i])


def test_the_stretch_is_the_same_on_any_thread_count(monkeypatch) -> None:
    """Chunks run on torch's thread count; every chunk is written, once, whatever the count, and a
    non-finite pixel in one chunk changes no other chunk."""
    import torch

    x = _stamps(n=11)
    x[4, 0, 2, 2], x[9, 2, 0, 0] = np.nan, np.inf
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(torch, "get_num_threads", lambda t=threads: t)
        results.append(normalise(x, chunk=2))
    assert all(np.array_equal(r, results[0]) for r in results[1:]) and np.isfinite(results[0]).all()
    assert np.array_equal(normalise(x[:4], chunk=2), results[0][:4])


def test_normalised_stamp_is_a_noise_scaled_asinh_around_its_median() -> None:
    x = _stamps(n=1, c=1)
    flat = x.reshape(-1)
    med = np.median(flat)
    sigma = 1.4826 * np.median(np.abs(flat - med))
    want = np.arcsinh((x - med) / (3.0 * sigma))
    np.testing.assert_allclose(normalise(x), want, rtol=1e-5, atol=1e-6)


def test_nan_and_inf_pixels_count_as_zero_and_leave_the_output_finite() -> None:
    x = _stamps()
    bad, zero = x.copy(), x.copy()
    bad[1, 0, 3, 4], bad[3, 2, 0, 0], bad[4, 1, 5, 5] = np.nan, np.inf, -np.inf
    zero[1, 0, 3, 4] = zero[3, 2, 0, 0] = zero[4, 1, 5, 5] = 0.0
    out = prepare(bad, 12)
    assert np.isfinite(out).all()
    assert np.array_equal(out, prepare(zero, 12))


def test_a_constant_band_becomes_zeros_not_nan() -> None:
    x = _stamps()
    x[0, 2] = 5.0
    out = prepare(x, 12)
    assert np.isfinite(out).all()
    assert not out[0, 2].any()


@pytest.mark.parametrize("shape", [(5, 3, 16, 16), (4, 2, 9, 7)])   # even and odd pixel counts
def test_normalise_on_torch_equals_the_numpy_stretch(shape: tuple) -> None:
    """`score` stretches on the GPU with `normalise_torch`; it must give `normalise`'s numbers."""
    import torch

    from harness.data.preprocess import normalise_torch

    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * rng.uniform(0.1, 100, size=shape[:2] + (1, 1))).astype(np.float32)
    x[0, 0] = 7.0                       # a constant stamp: MAD and std are 0
    x[1, 1, 0, 0] = np.nan              # a bad pixel
    x[2, 0, :2] = 0.0                   # a band whose MAD may vanish
    want = normalise(x)
    got = normalise_torch(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_small_stamps_are_stretched_on_their_own_pixels_then_padded() -> None:
    """The padding must not enter the stretch: zero padding over half a stamp would make its median
    absolute deviation 0 and fall back to a whole-stamp std that the padding shrinks."""
    rng = np.random.default_rng(3)
    stamps = (rng.normal(5.0, 2.0, (4, 3, 40, 40))).astype(np.float32)
    got = prepare(stamps, 64)
    assert got.shape == (4, 3, 64, 64)
    np.testing.assert_array_equal(got[..., 12:52, 12:52], normalise(stamps))
    assert (got[..., :12, :] == 0).all() and (got[..., 52:, :] == 0).all()
    wide = rng.normal(0.0, 1.0, (2, 1, 40, 90)).astype(np.float32)   # one side longer, one shorter
    np.testing.assert_array_equal(prepare(wide, 64)[..., 12:52, :], normalise(wide[..., 13:77]))
