"""The CUDA kernels' own paths: every load width (direct stores below V=8, staged from V=8), alignment,
torch streams."""

from __future__ import annotations

import numpy as np
import pytest

from svrt_data.voxelize import bin_frame_ranges, linear_bin_weights, voxelize
from tests.test_voxelize import check, expected_fn, random_packed

pytestmark = pytest.mark.needs_cuda

WINDOWS = np.array([[0.0, 40.0], [3.5, 17.25], [39.0, 40.0]])  # 3 windows x 7 bins: warps end mid-bin


@pytest.mark.parametrize("h, wb, v", [(3, 5, 1), (2, 3, 2), (4, 3, 4), (8, 3, 8), (16, 3, 16), (360, 80, 16)])
def test_every_vector_width(h: int, wb: int, v: int) -> None:
    import cupy as cp

    from kernels import voxelize_cupy

    rng = np.random.default_rng(h * wb)
    packed = random_packed(rng, 40, h, wb)
    frames = cp.asarray(packed)
    assert voxelize_cupy.vector_bytes(h * wb, frames.data.ptr) == v
    out = cp.full((3, 7, h, 8 * wb), 77, cp.uint8)  # poisoned: every byte must be written
    voxelize_cupy.voxelize_count(frames, bin_frame_ranges(WINDOWS, 7, 40), out)
    check(out.get(), expected_fn(packed, WINDOWS, 7, "count"), "count")
    lin = cp.full((3, 7, h, 8 * wb), np.nan, cp.float32)
    voxelize_cupy.voxelize_linear(frames, *linear_bin_weights(WINDOWS, 7, 40), lin)
    check(lin.get(), expected_fn(packed, WINDOWS, 7, "linear"), "linear")


def test_misaligned_frames_and_out() -> None:
    import cupy as cp

    rng = np.random.default_rng(9)
    packed = random_packed(rng, 40, 16, 3)
    buf = cp.zeros(packed.size + 1, cp.uint8)
    frames = buf[1:].reshape(packed.shape)  # C-contiguous, 1 byte off alignment
    frames[...] = cp.asarray(packed)
    out_buf = cp.zeros(3 * 7 * 16 * 24 + 1, cp.uint8)
    out = out_buf[1:].reshape(3, 7, 16, 24)
    assert voxelize(frames, WINDOWS, bins=7, out=out) is out
    check(out.get(), expected_fn(packed, WINDOWS, 7, "count"), "count")


def test_host_input_with_cupy_backend_stays_on_gpu() -> None:
    import cupy as cp

    rng = np.random.default_rng(10)
    packed = random_packed(rng, 40, 4, 3)
    result = voxelize(packed, WINDOWS, bins=7, backend="cupy")
    assert isinstance(result, cp.ndarray)
    check(result.get(), expected_fn(packed, WINDOWS, 7, "count"), "count")


def test_torch_runs_on_the_current_stream_and_fills_out() -> None:
    import torch

    rng = np.random.default_rng(11)
    packed = random_packed(rng, 40, 8, 5)
    spikes = torch.from_numpy(packed).cuda()
    stream = torch.cuda.Stream()
    out = torch.full((3, 7, 8, 40), 5, dtype=torch.uint8, device="cuda")
    with torch.cuda.stream(stream):
        stream.wait_stream(torch.cuda.current_stream())  # the inputs were made on the default stream
        result = voxelize(spikes, WINDOWS, bins=7, out=out)
        linear = voxelize(spikes, WINDOWS, bins=7, mode="linear")
        total = linear.sum()  # queued behind the kernel on the same stream
    stream.synchronize()
    assert result is out
    check(out.cpu().numpy(), expected_fn(packed, WINDOWS, 7, "count"), "count")
    assert linear.dtype == torch.float32 and linear.device == spikes.device
    check(linear.cpu().numpy(), expected_fn(packed, WINDOWS, 7, "linear"), "linear")
    assert total.item() == pytest.approx(float(out.sum().item()), rel=1e-6)
