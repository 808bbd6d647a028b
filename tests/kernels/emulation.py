"""Run the model ops' CUDA kernels on the CPU: each ``kernels/*.cu`` compiled as C++ with
``host_emulation/cuda_host.h`` (g++), launched over the grids the CUDA path computes.

:class:`EmulatedRuntime` has the interface of :class:`kernels.cuda_runtime.CupyRuntime`, so an op's CUDA
path (launch geometry, autograd Function, kernels) runs unchanged on CPU tensors:
``spike_accumulate_cuda(..., runtime=EmulatedRuntime())``. Blocks of a source that calls
``__syncthreads``/``__syncwarp`` run cooperatively (one OS thread per CUDA thread), others serially.
Libraries are built once per content hash under the system temp directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kernels.cuda_runtime import KERNEL_DIR

HEADER_DIR = Path(__file__).with_name("host_emulation")
_CTYPES = {
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
}


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def _registry(source: str, names: Sequence[str]) -> str:
    entries = ",\n".join(f'    emu::entry("{n}", &{n})' for n in names)
    return f"""#include "cuda_host.h"
#include "{KERNEL_DIR / source}"
static const emu::Entry svrt_entries[] = {{
{entries}
}};
extern "C" int svrt_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, void** params, int cooperative) {{
    for (const auto& e : svrt_entries) {{
        if (std::strcmp(e.name, name) == 0) {{
            e.run(dim3{{gx, gy, gz}}, dim3{{bx, by, bz}}, params, cooperative != 0);
            return 0;
        }}
    }}
    return 1;
}}
"""


@functools.cache
def _library(source: str, names: tuple[str, ...]) -> ctypes.CDLL:
    cxx = compiler()
    if cxx is None:
        pytest.skip("no C++ compiler (g++) for the kernel emulation")
    code = _registry(source, names)
    digest = hashlib.sha256(code.encode())
    for f in (KERNEL_DIR / source, *KERNEL_DIR.glob("*.cuh"), HEADER_DIR / "cuda_host.h"):
        digest.update(f.read_bytes())
    out_dir = Path(tempfile.gettempdir()) / f"svrt-kernel-emulation-{os.getuid()}"
    out_dir.mkdir(exist_ok=True)
    lib = out_dir / f"{Path(source).stem}-{digest.hexdigest()[:16]}.so"
    if not lib.exists():
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            cpp = Path(tmp) / "registry.cpp"
            cpp.write_text(code)
            built = Path(tmp) / lib.name
            cmd = [cxx, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", f"-I{HEADER_DIR}", f"-I{KERNEL_DIR}",
                   str(cpp), "-o", str(built)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"emulation build of {source} failed:\n{result.stderr[-4000:]}")
            os.replace(built, lib)  # whole file or nothing, also with concurrent test runs
    dll = ctypes.CDLL(str(lib))
    dll.svrt_emu_launch.restype = ctypes.c_int
    return dll


class _Kernel:
    def __init__(self, dll: ctypes.CDLL, name: str, cooperative: bool) -> None:
        self.dll, self.name, self.cooperative = dll, name, cooperative

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: Sequence[Any]) -> None:
        values: list[Any] = []
        for a in args:
            if isinstance(a, torch.Tensor):
                if a.device.type != "cpu" or not a.is_contiguous():
                    raise ValueError(f"emulated {self.name}: tensors must be contiguous CPU tensors")
                values.append(ctypes.c_void_p(a.data_ptr()))
            elif isinstance(a, np.generic):
                values.append(_CTYPES[a.dtype](a.item()))
            else:
                raise TypeError(f"emulated {self.name}: unsupported kernel argument {type(a).__name__}")
        params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        g = (*grid, 1, 1)[:3]
        b = (*block, 1, 1)[:3]
        rc = self.dll.svrt_emu_launch(self.name.encode(), *g, *b, params, int(self.cooperative))
        if rc:
            raise KeyError(f"emulated kernel {self.name!r} is not among the instantiated names")


class EmulatedRuntime:
    """The kernel runtime of :mod:`kernels.cuda_runtime`, on the CPU (module docstring).

    ``launches`` records ``(name, grid, block)`` of every launch, for tests of the launch geometry.
    """

    def __init__(self) -> None:
        self.launches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def function(self, source: str, names: Sequence[str], name: str, device: torch.device) -> Any:
        text = (KERNEL_DIR / source).read_text()
        cooperative = "__syncthreads" in text or "__syncwarp" in text
        kernel = _Kernel(_library(source, tuple(names)), name, cooperative)

        def launch(grid: tuple[int, ...], block: tuple[int, ...], args: Sequence[Any]) -> None:
            self.launches.append((name, tuple(grid), tuple(block)))
            kernel(grid, block, args)

        return launch

    def array(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach()

    @contextlib.contextmanager
    def stream(self, device: torch.device) -> Iterator[None]:
        yield
