"""Load-time voxel transforms on NumPy, torch and (with CUDA) CuPy / torch CUDA arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from svrt_data.loader.transforms import VoxelStats, compose, log1p, normalize, to_float, voxel_transform
from svrt_errors import SvrtValueError

KINDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("torch", id="torch-cpu"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.needs_cuda),
    pytest.param("torch-cuda", id="torch-cuda", marks=pytest.mark.needs_cuda),
]


def as_kind(x: np.ndarray, kind: str):
    if kind == "numpy":
        return x
    if kind == "cupy":
        import cupy as cp

        return cp.asarray(x)
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.cuda() if kind == "torch-cuda" else t


def to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return x.cpu().numpy()


def voxels(seed: int = 0, shape: tuple[int, ...] = (3, 4, 5, 6)) -> np.ndarray:
    """uint8 counts whose bins (axis -3) have different means."""
    rng = np.random.default_rng(seed)
    k = shape[-3]
    return rng.poisson(lam=np.arange(1, k + 1).reshape(-1, 1, 1) * 2.0, size=shape).astype(np.uint8)


@pytest.mark.parametrize("kind", KINDS)
def test_to_float_and_log1p_keep_the_array_kind(kind: str) -> None:
    v = voxels()
    x = as_kind(v, kind)
    f = to_float(x)
    assert type(f) is type(x) and str(f.dtype).endswith("float32")
    y = log1p(x)  # integer input: cast to float32 first (NumPy alone would give float16)
    assert str(y.dtype).endswith("float32")
    np.testing.assert_allclose(to_numpy(y), np.log1p(v.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per_bin", [True, False])
def test_normalised_voxels_have_zero_mean_unit_std(kind: str, per_bin: bool) -> None:
    v = voxels(1)
    stats = VoxelStats(per_bin=per_bin).update(log1p(as_kind(v, kind)))
    out = to_numpy(voxel_transform(log1p=True, stats=stats)(as_kind(v, kind))).astype(np.float64)
    axes = (0, 2, 3) if per_bin else None
    np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=axes), 1, rtol=1e-5)
    expect_mean = np.log1p(v.astype(np.float64)).mean(axis=axes)
    np.testing.assert_allclose(stats.mean, expect_mean, rtol=1e-6)  # stats of float32 log1p values


def test_stats_merge_chunk_by_chunk_equals_all_at_once() -> None:
    v = voxels(2, shape=(10, 4, 3, 3)).astype(np.float64) * 1000 + 1e6  # a large offset tests stability
    whole = VoxelStats().update(v)
    parts = [VoxelStats().update(v[:3]), VoxelStats().update(v[3:4]), VoxelStats().update(v[4:])]
    merged = VoxelStats().merge(parts[0]).merge(parts[1]).merge(parts[2])
    np.testing.assert_allclose(merged.mean, v.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(merged.std, v.std(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(merged.std, whole.std, rtol=1e-9)
    chunked = VoxelStats(per_bin=False)
    for chunk in np.array_split(v, 4):
        chunked.update(chunk)
    assert chunked.mean == pytest.approx(v.mean(), rel=1e-14)
    assert chunked.std == pytest.approx(v.std(), rel=1e-9)


def test_normalize_floors_std_and_broadcasts_over_leading_axes() -> None:
    x = np.ones((2, 3, 4, 2, 2), np.float32)  # (B, T, K, H, W)
    out = normalize(x, mean=np.array([1, 0, 0, 2]), std=np.array([0, 1, 2, 4]), eps=0.5)
    np.testing.assert_allclose(out[0, 0, :, 0, 0], [0 / 0.5, 1 / 1, 1 / 2, -1 / 4])
    assert out.dtype == np.float32


def test_compose_order_and_pickling() -> None:
    v = voxels(3)
    transform = compose(to_float, log1p, lambda x: x * 2)
    np.testing.assert_allclose(transform(v), 2 * np.log1p(v.astype(np.float32)), rtol=1e-6)
    stats = VoxelStats().update(log1p(v))
    chain = voxel_transform(log1p=True, stats=stats, dtype="float64")
    copy = pickle.loads(pickle.dumps(chain))  # DataLoader workers receive transforms by pickling
    np.testing.assert_array_equal(copy(v), chain(v))
    assert chain(v).dtype == np.float64


def test_transform_errors() -> None:
    v = voxels()
    with pytest.raises(SvrtValueError, match=r"normalize: voxels must be float, got uint8; apply to_float"):
        normalize(v, 0.0, 1.0)
    with pytest.raises(SvrtValueError, match=r"mean holds 3 per-bin values but the voxels \(3, 4, 5, 6\) have 4 bins"):
        normalize(v.astype(np.float32), np.zeros(3), np.ones(3))
    with pytest.raises(SvrtValueError, match=r"dtype must be one of float16, bfloat16, float32, float64, got 'int8'"):
        to_float(v, "int8")
    with pytest.raises(SvrtValueError, match=r"no data yet; call update\(\) first"):
        _ = VoxelStats().mean
    stats = VoxelStats().update(v)
    with pytest.raises(SvrtValueError, match=r"got 2 bins after 4; every update needs the same K"):
        stats.update(voxels(shape=(1, 2, 3, 3)))
    with pytest.raises(SvrtValueError, match=r"cannot merge per-bin and global"):
        stats.merge(VoxelStats(per_bin=False).update(v))
