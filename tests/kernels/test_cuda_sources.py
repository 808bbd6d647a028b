"""Every model-op CUDA source compiles for sm_90, as NVRTC will see it (the shared header inlined by
:func:`kernels.cuda_runtime.cuda_source`), with every template name expression the op instantiates,
without local-memory spills in the kernels that must keep their accumulators in registers.
Needs ``nvcc`` (not a GPU); skipped without it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kernels import deform_attn_cuda, fused_bias_act_cuda, spike_accumulate_cuda, upfirdn2d_cuda
from kernels.cuda_runtime import cuda_source

SOURCES = {
    spike_accumulate_cuda.SOURCE: spike_accumulate_cuda.NAMES,
    fused_bias_act_cuda.SOURCE: fused_bias_act_cuda.NAMES,
    upfirdn2d_cuda.SOURCE: upfirdn2d_cuda.NAMES,
    deform_attn_cuda.SOURCE: deform_attn_cuda.NAMES,
}
# kernels whose inner loops must not touch local memory (name fragments)
NO_SPILLS = {"spike_accumulate_forward", "bias_act_forward", "bias_act_grad", "upfirdn2d_kernel"}


def _instantiations(names: tuple[str, ...]) -> str:
    lines = [f"void* svrt_instance_{i}() {{ return (void*)&{name}; }}" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_source_compiles_for_sm90(source: str, tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    text = cuda_source(source)
    assert "#include" not in text, "NVRTC gets no include path: every include must be inlined"
    cu = tmp_path / source
    cu.write_text(text + _instantiations(SOURCES[source]))
    ptx = tmp_path / "out.ptx"
    result = subprocess.run([nvcc, "-ptx", "-arch=sm_90", "-std=c++17", str(cu), "-o", str(ptx)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        return
    result = subprocess.run([ptxas, "-arch=sm_90", "-v", str(ptx), "-o", str(tmp_path / "out.cubin")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for function, stats in re.findall(r"Compiling entry function '(\w+)'.*?\n(.*?Used \d+ registers[^\n]*)",
                                      result.stderr, flags=re.S):
        if any(prefix in function for prefix in NO_SPILLS):
            assert " 0 bytes spill stores" in stats, f"{function} spills: {stats}"
