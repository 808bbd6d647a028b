"""The model ops' backend choice, for every op at once: ``"auto"`` falls back to the torch path without CuPy or
a GPU, ``"cuda"`` says clearly what is missing (CuPy, with the install command; a GPU; CUDA tensors)."""

from __future__ import annotations

import sys

import pytest
import torch

from kernels import cuda_runtime
from kernels.deform_attn import deform_attn
from kernels.fused_bias_act import fused_bias_act
from kernels.spike_accumulate import spike_accumulate
from kernels.upfirdn2d import upfirdn2d
from svrt_errors import BackendUnavailableError, SvrtValueError

needs_cuda = pytest.mark.needs_cuda


def _ops(device: str) -> dict:
    """op name -> a call taking ``backend=`` on small inputs of ``device``."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    bits = torch.randint(0, 256, (1, 6, 2, 2), generator=gen, dtype=torch.uint8).to(device)
    ranges = torch.tensor([[[[0, 2], [2, 5]]]], device=device)
    q, kv, off = rand(1, 4, 3, 5), rand(1, 1, 4, 3, 5), rand(1, 36, 3, 5)
    x, b, img = rand(2, 3, 4), rand(3), rand(1, 2, 4, 4)
    gamma, f = torch.ones(2, device=device), torch.ones(2, 2, device=device)
    return {
        "spike_accumulate": lambda backend: spike_accumulate(bits, ranges, gamma, backend=backend),
        "fused_bias_act": lambda backend: fused_bias_act(x, b, backend=backend),
        "upfirdn2d": lambda backend: upfirdn2d(img, f, up=2, backend=backend),
        "deform_attn": lambda backend: deform_attn(q, kv, kv, off, heads=2, groups=2, backend=backend),
    }


OPS = list(_ops("cpu"))


@pytest.fixture
def without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(cuda_runtime, "cp", None)
    monkeypatch.setattr(cuda_runtime, "_cupy_missing", None)


def test_import_cupy_failure_names_the_op_and_the_install_command(without_cupy: None) -> None:
    assert not cuda_runtime.cupy_available()
    with pytest.raises(BackendUnavailableError, match=r'^upfirdn2d: backend .cuda. needs CuPy, which cannot be '
                                                      r'imported \(.*\); install CuPy with pip install "svrt\[cuda\]"'):
        cuda_runtime.import_cupy("upfirdn2d")


@pytest.mark.parametrize("op", OPS)
def test_cuda_backend_without_a_gpu_names_the_op(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    call = _ops("cpu")[op]
    with pytest.raises(BackendUnavailableError, match=rf"^{op}: backend 'cuda' needs a CUDA device, and torch sees "
                                                      r"none .*pass backend='torch' \(or 'auto'\)"):
        call("cuda")


@pytest.mark.parametrize("op", OPS)
def test_auto_is_the_torch_path_on_the_cpu(op: str) -> None:
    call = _ops("cpu")[op]
    assert torch.equal(call("auto"), call("torch"))


@needs_cuda
@pytest.mark.parametrize("op", OPS)
def test_without_cupy_auto_falls_back_and_cuda_raises(op: str, without_cupy: None) -> None:
    call = _ops("cuda")[op]
    assert torch.equal(call("auto"), call("torch"))
    with pytest.raises(BackendUnavailableError, match=rf"^{op}: backend 'cuda' needs CuPy"):
        call("cuda")


@needs_cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_backend_rejects_cpu_tensors(op: str) -> None:
    with pytest.raises(SvrtValueError, match=rf"^{op}: backend 'cuda' needs CUDA tensors; got .* on cpu"):
        _ops("cpu")[op]("cuda")


@needs_cuda
@pytest.mark.parametrize("op", OPS)
def test_auto_is_the_kernel_on_cuda(op: str) -> None:
    call = _ops("cuda")[op]
    assert torch.equal(call("auto"), call("cuda"))
