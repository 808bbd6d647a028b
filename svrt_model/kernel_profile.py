"""Where a GPU step's time goes: the device kernels of a ``torch.profiler`` run, summed per kernel name and
grouped into categories, as one markdown table of categories and one of the top kernels.

Categories come from the kernel names (cuBLAS / CUTLASS / cuDNN / PyTorch / Triton / our CuPy kernels); the
rules are ordered, the first match wins, and anything unmatched is "other" (e.g. ``grid_sampler`` of the flow
warps, the fused AdamW step). Used by ``benchmarks/bench_svrt.py --profile``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch.autograd import DeviceType

from svrt_model.errors import ModelConfigError

__all__ = ["CATEGORIES", "KernelSummary", "categorize", "format_kernel_tables", "kernel_events", "summarize_kernels"]

CATEGORIES = (
    "GEMM", "attention/SDPA", "elementwise", "copies/permutes/cat", "reductions/norms", "deformable conv",
    "convolution", "other",
)

# (category, lower-case name fragments); first match wins, so the specific rules come first.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("other", ("grid_sampler", "multi_tensor_apply", "adam")),
    ("elementwise", ("triton_poi",)),
    ("reductions/norms", ("triton_red", "triton_per")),
    ("attention/SDPA", ("flex_attention", "flex_decoding")),  # inductor's FlexAttention templates
    ("GEMM", ("triton_tem",)),
    ("deformable conv", ("deform_im2col", "deform_col2im", "deform_attn")),
    ("attention/SDPA", ("fmha", "flash_fwd", "flash_bwd", "flash::", "attention", "sdpa", "mha_")),
    ("copies/permutes/cat", ("nchwtonhwc", "nhwctonchw")),  # cuDNN's layout transposes around convolutions
    ("convolution", ("fprop", "dgrad", "wgrad", "implicit_gemm", "convolve", "conv2d", "conv3d", "winograd", "cudnn")),
    ("GEMM", ("gemm", "nvjet", "cublas", "xmma", "cutlass", "splitk")),
    ("copies/permutes/cat", (
        "copy", "catarray", "index", "gather", "scatter", "roll_cuda", "transpose", "memcpy", "memset",
        "fill", "flip", "pad", "repeat", "take",
    )),
    ("reductions/norms", ("reduce", "norm", "softmax", "welford", "gammabeta", "moments")),
    ("elementwise", (
        "elementwise", "gelu", "tanh", "sigmoid", "leaky", "threshold", "functor", "addcmul", "bias_act",
    )),
)


def categorize(name: str) -> str:
    """The category of a kernel name (one of :data:`CATEGORIES`)."""
    low = name.lower()
    for category, fragments in _RULES:
        if any(f in low for f in fragments):
            return category
    return "other"


@dataclass(frozen=True)
class KernelSummary:
    """Kernel time per step. ``kernels``: ``(name, category, calls per step, ms per step)`` by time, largest
    first; ``categories``: ``(category, kernels, ms per step)`` in :data:`CATEGORIES` order; ``total_ms``."""

    steps: int
    kernels: tuple[tuple[str, str, float, float], ...]
    categories: tuple[tuple[str, int, float], ...]
    total_ms: float


def summarize_kernels(events: Iterable[tuple[str, float]], steps: int) -> KernelSummary:
    """Sum ``(kernel name, duration in microseconds)`` events over ``steps`` profiled steps, per name and
    per category, in milliseconds per step."""
    if steps < 1:
        raise ModelConfigError(f"summarize_kernels: steps={steps}; expected the number of profiled steps (>= 1)")
    per_name: dict[str, list[float]] = {}
    for name, us in events:
        entry = per_name.setdefault(name, [0.0, 0.0])
        entry[0] += 1
        entry[1] += us
    kernels = sorted(
        ((n, categorize(n), c / steps, us / steps / 1e3) for n, (c, us) in per_name.items()), key=lambda k: -k[3]
    )
    cats = {c: [0, 0.0] for c in CATEGORIES}
    for _, cat, _, ms in kernels:
        cats[cat][0] += 1
        cats[cat][1] += ms
    return KernelSummary(
        steps=steps, kernels=tuple(kernels), categories=tuple((c, int(n), ms) for c, (n, ms) in cats.items()),
        total_ms=sum(k[3] for k in kernels),
    )


def _short(name: str, width: int) -> str:
    name = " ".join(name.replace("void ", "").split()).replace("|", "/")
    return name if len(name) <= width else name[: width - 3] + "..."


def format_kernel_tables(summary: KernelSummary, title: str, top: int = 30, width: int = 110) -> str:
    """Markdown: the category table, then the ``top`` kernels by time (names cut to ``width`` characters)."""
    total = summary.total_ms or 1.0
    lines = [
        f"{title}: {summary.total_ms:.1f} ms of kernel time per step (mean of {summary.steps} steps)", "",
        "| category | kernels | ms / step | % |", "|---|---|---|---|",
    ]
    lines += [f"| {c} | {n} | {ms:.2f} | {100 * ms / total:.1f} |" for c, n, ms in summary.categories]
    lines += ["", "| kernel | category | calls / step | ms / step | % |", "|---|---|---|---|---|"]
    lines += [
        f"| {_short(n, width)} | {c} | {calls:g} | {ms:.2f} | {100 * ms / total:.1f} |"
        for n, c, calls, ms in summary.kernels[:top]
    ]
    return "\n".join(lines)


def kernel_events(prof: object) -> list[tuple[str, float]]:
    """``(name, microseconds)`` of every device-side event (kernels, memcpy, memset) of a finished
    ``torch.profiler.profile``."""
    return [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type != DeviceType.CPU]
