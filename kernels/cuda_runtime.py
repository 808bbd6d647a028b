"""The CuPy plumbing shared by the model ops' CUDA paths (spike accumulator, fused bias+activation,
upfirdn2d, guided deformable attention).

- CuPy is optional: it is imported on first use; without it :class:`BackendUnavailableError` names the op
  and the install command.
- Each ``.cu`` source is compiled once per (source, device) and process through ``cupy.RawModule``
  (NVRTC: no nvcc, ninja or C++ toolchain on the user's machine). A source may ``#include
  "svrt_cuda.cuh"`` (this directory's shared dtype helpers): the line is replaced by the header's text
  before compiling, so CuPy's on-disk cache key covers the header too and never serves a stale build.
- Kernels run on torch's current stream; tensors reach CuPy through DLPack, without copies.

The ops' launch code talks to a *runtime* object with three methods (:class:`CupyRuntime` here;
``tests/kernels/emulation.py`` provides one that runs the same kernels compiled as C++ on the CPU):
``function(source, names, name, device)`` returns a callable ``(grid, block, args)``,
``array(tensor)`` turns a tensor into a kernel argument, ``stream(device)`` is a context manager.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from svrt_errors import BackendUnavailableError, SvrtValueError

__all__ = [
    "CUDA_RUNTIME",
    "CupyRuntime",
    "Runtime",
    "cuda_source",
    "cupy_available",
    "import_cupy",
    "require_cuda",
]

KERNEL_DIR = Path(__file__).parent
INSTALL_HINT = (
    'install CuPy with pip install "svrt[cuda]" (or "svrt[cuda13]" on a CUDA 13 stack), '
    "or pass backend='torch'"
)
_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.cuh)"\s*$', re.MULTILINE)

cp: Any = None  # the cupy module once imported; stays None while CuPy is absent
_cupy_missing: str | None = None  # the ImportError message once an import failed


def import_cupy(op: str) -> Any:
    """The ``cupy`` module; raises :class:`BackendUnavailableError` naming ``op`` when it cannot be imported."""
    global cp, _cupy_missing
    if cp is None:
        if _cupy_missing is None:
            try:
                import cupy
            except ImportError as exc:
                _cupy_missing = str(exc)
            else:
                cp = cupy
                return cp
        raise BackendUnavailableError(
            f"{op}: backend 'cuda' needs CuPy, which cannot be imported ({_cupy_missing}); {INSTALL_HINT}"
        )
    return cp


def cupy_available() -> bool:
    """Whether CuPy imports (the CUDA paths' only extra dependency)."""
    try:
        import_cupy("cupy_available")
    except BackendUnavailableError:
        return False
    return True


def require_cuda(op: str, tensor: torch.Tensor, name: str) -> None:
    """Raise unless ``tensor`` is a CUDA tensor (the ``"cuda"`` backend's precondition).

    Raises:
        BackendUnavailableError: torch sees no CUDA device at all.
        SvrtValueError: a CUDA device exists but the tensor is elsewhere.
    """
    if tensor.is_cuda:
        return
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"{op}: backend 'cuda' needs a CUDA device, and torch sees none (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda}); pass backend='torch' (or 'auto') to run on {tensor.device}"
        )
    raise SvrtValueError(
        f"{op}: backend 'cuda' needs CUDA tensors; got {name} on {tensor.device}; move the tensors with .cuda() "
        "or pass backend='torch'"
    )


def cuda_source(name: str) -> str:
    """The text of ``kernels/<name>``, with ``#include "x.cuh"`` lines of this directory inlined."""
    text = (KERNEL_DIR / name).read_text()
    return _INCLUDE.sub(lambda m: (KERNEL_DIR / m.group(1)).read_text(), text)


class Runtime(Protocol):
    """What the ops' launch code needs from a kernel runtime (module docstring)."""

    def function(self, source: str, names: Sequence[str], name: str, device: torch.device) -> Any: ...

    def array(self, tensor: torch.Tensor) -> Any: ...

    def stream(self, device: torch.device) -> contextlib.AbstractContextManager[None]: ...


@functools.cache
def _module(source: str, names: tuple[str, ...], device_index: int) -> Any:
    return cp.RawModule(code=cuda_source(source), options=("-std=c++17",), name_expressions=list(names))


_STREAMS: dict[tuple[int, int], Any] = {}  # (device, stream pointer) -> CuPy's wrapper of that torch stream


def _cupy_stream(device: torch.device) -> Any:
    stream = torch.cuda.current_stream(device)
    key = (device.index, stream.cuda_stream)
    if key not in _STREAMS:
        if len(_STREAMS) > 64:
            _STREAMS.clear()
        wrapped = None
        if hasattr(cp.cuda.Stream, "from_external"):  # CuPy >= 14: the CUDA stream protocol
            try:
                wrapped = cp.cuda.Stream.from_external(stream)
            except (TypeError, ValueError, AttributeError):
                wrapped = None
            if wrapped is not None and wrapped.ptr != stream.cuda_stream:
                wrapped = None
        if wrapped is None:  # CuPy 13, or a torch stream without the protocol
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in CuPy 14 only
                wrapped = cp.cuda.ExternalStream(stream.cuda_stream, device.index)
        _STREAMS[key] = wrapped
    return _STREAMS[key]


class CupyRuntime:
    """The production runtime: NVRTC-compiled kernels launched on torch's current stream."""

    def function(self, source: str, names: Sequence[str], name: str, device: torch.device) -> Any:
        return _module(source, tuple(names), device.index).get_function(name)

    def array(self, tensor: torch.Tensor) -> Any:
        t = tensor.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            # The kernels read 16-bit patterns (svrt_cuda.cuh); CuPy's DLPack import knows no bfloat16
            # (CuPy 13 crashes on it, 14 needs ml_dtypes), so both half types travel as int16 views.
            t = t.view(torch.int16)
        return cp.from_dlpack(t)

    @contextlib.contextmanager
    def stream(self, device: torch.device) -> Iterator[None]:
        with cp.cuda.Device(device.index), _cupy_stream(device):
            yield


CUDA_RUNTIME = CupyRuntime()
