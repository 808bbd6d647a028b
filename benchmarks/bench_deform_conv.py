"""Benchmark the modulated deformable conv at VRT's alignment shapes: reference vs our CUDA kernels vs
torchvision (when it imports), float32 and bfloat16 inputs, one table.

Run on a CUDA machine from the repository root::

    PYTHONPATH=. python benchmarks/bench_deform_conv.py [--reps 20] [--markdown table.md]

Rows: each shape with flow-like offsets in float32 and bfloat16, and with i.i.d. offsets in float32.
Columns: forward and forward+backward time (median of CUDA-event timings after warm-up), speed-up of
each over the reference and over torchvision, peak memory of a forward+backward step, and the error of
the output and of the gradients (the worst of the five): ||x - x64|| / ||x64|| against the float64
reference computed on the same (rounded) inputs. bfloat16 rows feed bfloat16 input/offset/mask with
float32 weight and bias under ``torch.autocast``, as VRT does in mixed precision.
"""

from __future__ import annotations

import argparse
import functools
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from kernels.deform_conv import deform_conv2d
from svrt_model.profiling import cuda_event_ms


@dataclass(frozen=True)
class Shape:
    name: str
    B: int  # frame pairs aligned in one call
    C: int
    H: int
    W: int
    G: int  # deformable (offset) groups
    k: int = 3


SHAPES = (
    Shape("GoPro stage-1 (5 pairs, 96ch, 192x192, dg16)", 5, 96, 192, 192, 16),
    Shape("S-VRT-like (4 pairs, 96ch, 256x256, dg16)", 4, 96, 256, 256, 16),
)


OFFSETS = ("flow-like", "iid", "smooth")


def make_inputs(shape: Shape, offsets: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 CUDA tensors as pa_deform feeds them: masks in (0, 1) and offsets of several pixels.

    ``offsets="flow-like"``: a smooth field (bilinear upsampling of N(0, 4^2) at 1/16 resolution) plus
    N(0, 0.5^2) per tap, like a flow plus the learned residual; ``"smooth"``: the field alone (pa_deform
    at initialisation, whose last offset conv starts at zero); ``"iid"``: N(0, 3^2) per element.
    """
    gen = torch.Generator(device="cuda").manual_seed(seed)
    B, C, H, W, G, K = shape.B, shape.C, shape.H, shape.W, shape.G, shape.k * shape.k

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen, device="cuda")

    if offsets in ("flow-like", "smooth"):
        coarse = 4.0 * randn(B, 2, H // 16, W // 16)
        flow = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
        noise = 0.5 * randn(B, 2 * G * K, H, W)
        offset = flow.repeat(1, G * K, 1, 1) + (noise if offsets == "flow-like" else 0.0)
    elif offsets == "iid":
        offset = 3.0 * randn(B, 2 * G * K, H, W)
    else:
        raise ValueError(f"unknown offsets {offsets!r}; expected one of {OFFSETS}")
    return {
        "input": randn(B, C, H, W),
        "offset": offset,
        "mask": torch.sigmoid(randn(B, G * K, H, W)),
        "weight": randn(C, C, shape.k, shape.k) / (C * K) ** 0.5,
        "bias": randn(C),
    }


def call(backend: str, t: dict[str, torch.Tensor]) -> torch.Tensor:
    if backend == "torchvision":
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        return tv_deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], 1, 1, 1, t["mask"])
    return deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], 1, 1, 1, t["mask"], backend=backend)


def cast(t: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Activations in ``dtype``; parameters stay float32 unless ``dtype`` is float64."""
    keep = dtype if dtype == torch.float64 else torch.float32
    return {k: v.to(keep if k in ("weight", "bias") else dtype) for k, v in t.items()}


def median_ms(fn: Callable[[], None], reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(cuda_event_ms(fn, reps))


def run_step(backend: str, t: dict[str, torch.Tensor], grad_out: torch.Tensor, dtype: torch.dtype):
    """One forward+backward; returns the output and the gradients (float64 copies not made here)."""
    leaves = {k: v.detach().requires_grad_() for k, v in t.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = call(backend, leaves)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (2-norms). Not a max norm: where float32 and float64 round a sample
    position to different sides of an integer, the offset gradient jumps (bilinear is only piecewise
    smooth), and a few such positions among millions would dominate a max."""
    want = want.double()
    return (torch.linalg.vector_norm(got.double() - want) / torch.linalg.vector_norm(want)).item()


def bench_one(shape: Shape, offsets: str, dtype: torch.dtype, backend: str, reps: int, truth) -> dict:
    t = cast(make_inputs(shape, offsets), dtype)
    out64, grads64, grad_out = truth
    amp = dtype == torch.bfloat16
    try:
        out, grads = run_step(backend, t, grad_out, dtype)
    except (RuntimeError, NotImplementedError) as exc:  # e.g. a dtype torchvision has no kernel for
        return {"error": str(exc).splitlines()[0][:60]}
    fwd_err = rel_err(out, out64)
    grad_err = max(rel_err(grads[k], grads64[k]) for k in grads)
    del out, grads

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            call(backend, t)

    def step() -> None:
        run_step(backend, t, grad_out, dtype)

    n = max(3, reps // 4) if backend == "reference" else reps
    fwd = median_ms(forward, n, warmup=5)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step_ms = median_ms(step, n, warmup=5)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"fwd": fwd, "step": step_ms, "peak": peak, "fwd_err": fwd_err, "grad_err": grad_err}


def warm_up_gpu(seconds: float = 1.0) -> None:
    """Run matrix products for a while so clocks settle before the first timed case."""
    a = torch.randn(4096, 4096, device="cuda")
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    while True:
        for _ in range(20):
            a = torch.tanh(a @ a)
        end.record()
        end.synchronize()
        if start.elapsed_time(end) > 1000 * seconds:
            return


def profile(shape: Shape) -> str:
    """Kernel-time breakdown of one float32 forward+backward of our CUDA path (flow-like offsets)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    t = make_inputs(shape, "flow-like")
    grad_out = torch.randn(shape.B, shape.C, shape.H, shape.W, device="cuda")
    for _ in range(3):
        run_step("cuda", t, grad_out, torch.float32)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            run_step("cuda", t, grad_out, torch.float32)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60)
    return table + "\n" + _col2im_split(shape, grad_out)


def _col2im_split(shape: Shape, grad_out: torch.Tensor) -> str:
    """Time the backward kernel alone, with each group of outputs switched off, for both kinds of offsets.
    (The grad_input neighbour merge is always on: the library has no switch for it; the last timing
    without it is in benchmarks/RESULTS.md.)"""
    from kernels import deform_conv_cuda as dcc

    K = shape.k * shape.k
    geo = dcc._Geometry(shape.C, shape.H, shape.W, shape.G, 3, 3, shape.H, shape.W, (1, 1), (1, 1), (1, 1))
    grad_cols = torch.randn(shape.B, shape.C * K, shape.H * shape.W, device="cuda")
    lines = ["kernels alone, float32 (median ms):"]
    for offsets in OFFSETS:
        t = make_inputs(shape, offsets)
        x, off, msk = t["input"], t["offset"], t["mask"]
        gx, goff, gmsk = torch.zeros_like(x), torch.empty_like(off), torch.empty_like(msk)
        for label, outs in (
            ("col2im, all outputs", (gx, goff, gmsk)),
            ("col2im, grad_input only", (gx, None, None)),
            ("col2im, grad_offset + grad_mask only", (None, goff, gmsk)),
        ):
            ms = median_ms(functools.partial(dcc._col2im, x, off, msk, grad_cols, *outs, geo), 20)
            lines.append(f"  {offsets}: {label}: {ms:.3f}")
        ms = median_ms(functools.partial(dcc._im2col, x, off, msk, geo), 20)
        lines.append(f"  {offsets}: im2col: {ms:.3f}")
    # grad_weight GEMM: the same product written three ways (cuBLAS picks its kernel by the layout)
    N = shape.H * shape.W
    go = torch.randn(shape.B, 1, shape.C, N, device="cuda")
    cols = torch.randn(shape.B, 1, shape.C * K, N, device="cuda")
    for label, fn in (
        ("grad_w = (go @ cols^T).sum(0)  [used]", lambda: torch.matmul(go, cols.transpose(2, 3)).sum(0)),
        ("grad_w = (cols @ go^T).sum(0)^T", lambda: torch.matmul(cols, go.transpose(2, 3)).sum(0).transpose(1, 2)),
        ("grad_w = einsum('bgon,bgkn->gok')", lambda: torch.einsum("bgon,bgkn->gok", go, cols)),
    ):
        lines.append(f"  {label}: {median_ms(fn, 20):.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--profile", action="store_true", help="also print a kernel-time breakdown (5 steps)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_deform_conv: needs a CUDA device")
    try:
        import torchvision.ops  # noqa: F401

        backends = ["reference", "cuda", "torchvision"]
    except ImportError:
        backends = ["reference", "cuda"]
    variants = [("flow-like", torch.float32), ("flow-like", torch.bfloat16), ("iid", torch.float32)]
    cases = [(s, o, d, b) for s in SHAPES for o, d in variants for b in backends]
    warm_up_gpu()
    results: dict = {}
    truths: dict = {}
    for shape, offsets, dtype, backend in tqdm(cases, desc="deform_conv2d", unit="case"):
        key = (shape.name, offsets, dtype)
        if key not in truths:  # float64 reference on the inputs as this dtype rounds them
            truths.clear()  # keep one at a time (GPU memory)
            t64 = cast(cast(make_inputs(shape, offsets), dtype), torch.float64)
            grad_out = torch.randn(shape.B, shape.C, shape.H, shape.W, device="cuda", dtype=torch.float64)
            out64, grads64 = run_step("reference", t64, grad_out, torch.float64)
            truths[key] = (out64, grads64, grad_out)
            del t64, out64, grads64
        results[key + (backend,)] = bench_one(shape, offsets, dtype, backend, args.reps, truths[key])
        torch.cuda.empty_cache()

    header = (
        "| shape | offsets | dtype | backend | fwd ms | fwd+bwd ms | fwd x ref | fwd+bwd x ref | fwd x tv "
        "| fwd+bwd x tv | peak MiB fwd+bwd | fwd err | grad err |"
    )
    lines = [header, "|" + " --- |" * 13]
    for (name, offsets, dtype, backend), r in results.items():
        dt = str(dtype).removeprefix("torch.")
        if "error" in r:
            lines.append(f"| {name} | {offsets} | {dt} | {backend} | n/a: {r['error']} |" + " |" * 8)
            continue
        ref = results[(name, offsets, dtype, "reference")]
        tv = results.get((name, offsets, dtype, "torchvision"), {})

        def ratio(other: dict, k: str, r: dict = r) -> str:
            return f"{other[k] / r[k]:.2f}" if k in other else "-"

        lines.append(
            f"| {name} | {offsets} | {dt} | {backend} | {r['fwd']:.3f} | {r['step']:.3f} | {ratio(ref, 'fwd')} | "
            f"{ratio(ref, 'step')} | {ratio(tv, 'fwd')} | {ratio(tv, 'step')} | {r['peak']:.0f} | "
            f"{r['fwd_err']:.1e} | {r['grad_err']:.1e} |"
        )
    device = torch.cuda.get_device_name()
    table = "\n".join(lines)
    if args.profile:
        print(profile(SHAPES[0]))
    print(f"\n{device}, torch {torch.__version__}, reps {args.reps} (reference: {max(3, args.reps // 4)})\n")
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(f"{device}, torch {torch.__version__}\n\n{table}\n")


if __name__ == "__main__":
    main()
