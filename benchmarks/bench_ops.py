"""The model ops (issue 13): every op's CUDA path against the best plain-torch formulation, eager and
``torch.compile``d, in one run and ONE table, with the device's copy bandwidth measured in the same run.
``window_attn`` (issue 12) puts the backbone's window attention there too: FlexAttention as the candidate
row against the model's SDPA path and the official matmul-softmax, at ``svrt_base``'s stage-1 shapes.

Run on a CUDA machine from the repository root::

    PYTHONPATH=. python3 benchmarks/bench_ops.py [--reps 30] [--no-compile] [--ops spike,bias_act,...]
                                                 [--markdown table.md]
    python3 benchmarks/bench_ops.py --smoke   # CPU: tiny shapes, every torch formulation once, no timings

Columns (``docs/ops.md`` explains them at length):

- ``gpu ms``: device time of the kernels one call launches (CUPTI through ``torch.profiler``, summed over
  ``--reps`` calls, divided by ``--reps``): what the GPU spends, host launch overhead excluded.
- ``wall ms``: CUDA-event time per call over ``--reps`` back-to-back calls, host overhead included (larger
  than ``gpu ms`` when Python cannot keep the GPU busy: small ops, CuPy's launch path, graph breaks).
- ``fwd+bwd``: the same for a forward and a backward of every differentiable input.
- ``GB/s``: the op's compulsory traffic (each input read once, each output written once) / ``gpu ms`` of
  the forward; ``% copy``: that over the copy bandwidth (``dst.copy_(src)`` of 1 GiB, read + write).
- ``peak MiB``: peak memory allocated during one forward+backward, beyond what was allocated before.
- ``err``: ``max |out - out64| / max |out64|`` against the float64 torch path on the same inputs.
- ``vs torch``: the best torch row's ``gpu ms`` over this row's (forward / forward+backward); the CUDA rows
  add ``faster`` or ``SLOWER``, so an op that does not beat plain torch says so.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from kernels.deform_attn import deform_attn_torch  # noqa: E402
from kernels.deform_attn_cuda import deform_attn_cuda  # noqa: E402
from kernels.fused_bias_act_cuda import fused_bias_act_cuda  # noqa: E402
from kernels.spike_accumulate import spike_accumulate_torch  # noqa: E402
from kernels.spike_accumulate_cuda import spike_accumulate_cuda  # noqa: E402
from kernels.upfirdn2d import upfirdn2d_torch  # noqa: E402
from kernels.upfirdn2d_cuda import upfirdn2d_cuda  # noqa: E402
from svrt_model.layers.attention import window_attention  # noqa: E402
from svrt_model.layers.window import effective_window, mask_groups, shifted_window_mask  # noqa: E402

OPS = ("spike", "bias_act", "upfirdn", "deform_attn", "window_attn")


@dataclass
class Impl:
    """One row: ``fwd(inputs)`` returns the output; ``kind`` is "cuda" or "torch"."""

    name: str
    kind: str
    fwd: Callable[[dict], torch.Tensor]
    compile: bool = False


@dataclass
class Case:
    """One op at one shape: inputs, the float64 truth, the differentiable inputs, the traffic of a forward."""

    op: str
    shape: str
    make: Callable[[torch.device, bool], dict]  # (device, smoke) -> inputs
    impls: list[Impl]
    grads: tuple[str, ...]
    traffic: Callable[[dict, torch.Tensor], int]
    results: dict[str, dict] = field(default_factory=dict)


# ---------------------------------------------------------------- spike_accumulate


def spike_inputs(device: torch.device, smoke: bool) -> dict:
    """B=1, T=5, K=32, 256x256, 56 spike frames per frame window (adjacent windows: S = 280)."""
    B, T, K, H, W, per = (1, 5, 32, 256, 256, 56) if not smoke else (1, 2, 4, 8, 16, 7)
    gen = torch.Generator(device=device).manual_seed(0)
    spikes = torch.rand(B, T * per, H, W, generator=gen, device=device) < 0.15
    bits = (spikes.view(B, T * per, H, W // 8, 8).to(torch.uint8) << torch.arange(8, device=device, dtype=torch.uint8)
            ).sum(-1, dtype=torch.uint8)  # B S H W/8, pixel x = bit x % 8 of byte x // 8
    # bin edges of svrt_data.voxelize: e_k = t0 + k (t1 - t0) / K, frames [ceil(e_k), ceil(e_k+1))
    edges = np.ceil(np.arange(T)[:, None] * per + np.arange(K + 1)[None, :] * per / K).astype(np.int64)
    ranges = torch.from_numpy(np.stack([edges[:, :-1], edges[:, 1:]], -1)[None]).to(device)  # B T K 2
    gamma = torch.linspace(0.5, 1.0, K, device=device)
    steps = int((ranges[..., 1] - ranges[..., 0]).max())
    return {"bits": bits, "ranges": ranges, "gamma": gamma, "W": W, "steps": steps}


def unpack_bmm(bits: torch.Tensor, ranges: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The GEMM formulation: all frames unpacked to float, times a (T*K, S) matrix of decay weights."""
    B, S, H, Wb = bits.shape
    T, K = ranges.shape[1:3]
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    spikes = ((bits.unsqueeze(-1) >> shifts) & 1).reshape(B, S, H * Wb * 8).to(gamma.dtype)  # B S (H W)
    s = torch.arange(S, device=bits.device)
    r0, r1 = ranges[..., :1], ranges[..., 1:]  # B T K 1
    expo = (r1 - 1 - s).clamp(min=0).to(gamma.dtype)
    weights = torch.where((s >= r0) & (s < r1), gamma.view(1, 1, K, 1) ** expo, 0.0)  # B T K S
    return torch.bmm(weights.view(B, T * K, S), spikes).view(B, T, K, H, Wb * 8)


def spike_case() -> Case:
    def torch_path(t: dict) -> torch.Tensor:
        return spike_accumulate_torch(t["bits"], t["ranges"], t["gamma"], t["W"], t["gamma"].dtype, t["steps"])

    def cuda(staged: bool, dtype: torch.dtype) -> Callable[[dict], torch.Tensor]:
        return lambda t: spike_accumulate_cuda(t["bits"], t["ranges"], t["gamma"], t["W"], dtype, staged=staged)

    def traffic(t: dict, out: torch.Tensor) -> int:
        frames = int((t["ranges"][..., 1] - t["ranges"][..., 0]).sum())  # adjacent bins: each frame once
        return frames * t["bits"][0, 0].numel() + out.numel() * out.element_size()

    impls = [
        Impl("cuda, staged stores", "cuda", cuda(True, torch.float32)),
        Impl("cuda, direct stores", "cuda", cuda(False, torch.float32)),
        Impl("cuda, bf16 output (autocast)", "cuda", cuda(True, torch.bfloat16)),
        Impl("torch Horner gather", "torch", torch_path),
        Impl("torch Horner gather", "torch", torch_path, compile=True),
        Impl("torch unpack + bmm", "torch", lambda t: unpack_bmm(t["bits"], t["ranges"], t["gamma"])),
        Impl("torch unpack + bmm", "torch", lambda t: unpack_bmm(t["bits"], t["ranges"], t["gamma"]), compile=True),
    ]
    return Case("spike_accumulate", "B1 T5 K32 256x256, 56 frames/window", spike_inputs, impls, ("gamma",), traffic)


# ---------------------------------------------------------------- fused_bias_act


def bias_act_case(dtype: torch.dtype) -> Case:
    def make(device: torch.device, smoke: bool) -> dict:
        shape = (1, 64, 5, 256, 256) if not smoke else (1, 4, 2, 8, 8)
        gen = torch.Generator(device=device).manual_seed(1)
        x = torch.randn(shape, generator=gen, device=device).to(dtype)
        return {"x": x, "bias": torch.randn(shape[1], generator=gen, device=device)}

    def plain(t: dict) -> torch.Tensor:
        b = t["bias"].to(t["x"].dtype).view(1, -1, 1, 1, 1)
        return F.leaky_relu(t["x"] + b, 0.2) * math.sqrt(2)

    def cuda(t: dict) -> torch.Tensor:
        return fused_bias_act_cuda(t["x"], t["bias"], 0.2, math.sqrt(2), 1, False)

    def traffic(t: dict, out: torch.Tensor) -> int:
        return 2 * out.numel() * out.element_size()

    impls = [Impl("cuda", "cuda", cuda), Impl("torch", "torch", plain), Impl("torch", "torch", plain, compile=True)]
    name = str(dtype).removeprefix("torch.")
    return Case("fused_bias_act", f"lrelu 0.2, gain sqrt 2, 1x64x5x256x256 {name}", make, impls, ("x", "bias"),
                traffic)


# ---------------------------------------------------------------- upfirdn2d


def upfirdn_case(direction: str) -> Case:
    up, down, pad = ((2, 2), (1, 1), (2, 1, 2, 1)) if direction == "up" else ((1, 1), (2, 2), (1, 1, 1, 1))
    gain = 4.0 if direction == "up" else 1.0

    def make(device: torch.device, smoke: bool) -> dict:
        shape = (8, 96, 128, 128) if not smoke else (1, 2, 8, 8)
        gen = torch.Generator(device=device).manual_seed(2)
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device) / 8
        return {"x": torch.randn(shape, generator=gen, device=device), "f": torch.outer(taps, taps) * gain}

    def torch_path(t: dict) -> torch.Tensor:
        return upfirdn2d_torch(t["x"], t["f"], up, down, pad)

    def cuda(t: dict) -> torch.Tensor:
        return upfirdn2d_cuda(t["x"], t["f"], up, down, pad)

    def traffic(t: dict, out: torch.Tensor) -> int:
        return (t["x"].numel() + out.numel()) * out.element_size()

    impls = [Impl("cuda", "cuda", cuda), Impl("torch pad + conv2d", "torch", torch_path),
             Impl("torch pad + conv2d", "torch", torch_path, compile=True)]
    label = "2x up" if direction == "up" else "2x down"
    return Case("upfirdn2d", f"{label}, 4x4 binomial, 8x96x128x128 fp32", make, impls, ("x",), traffic)


# ---------------------------------------------------------------- deform_attn


def deform_attn_case() -> Case:
    cfg = {"kernel_size": (3, 3), "heads": 12, "groups": 12, "scale": 8**-0.5}

    def make(device: torch.device, smoke: bool) -> dict:
        B, C, H, W, N = (8, 96, 96, 96, 1) if not smoke else (1, 12, 6, 5, 1)
        gen = torch.Generator(device=device).manual_seed(3)
        coarse = 4.0 * torch.randn(B, 2, max(H // 16, 1), max(W // 16, 1), generator=gen, device=device)
        flow = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)  # B 2 H W
        P, G = 9, cfg["groups"]
        offset = flow.repeat(1, N * G * P, 1, 1) + 0.5 * torch.randn(B, N * G * P * 2, H, W, generator=gen,
                                                                       device=device)
        return {
            "query": torch.randn(B, C, H, W, generator=gen, device=device),
            "key": torch.randn(B, N, C, H, W, generator=gen, device=device),
            "value": torch.randn(B, N, C, H, W, generator=gen, device=device),
            "offset": offset,
        }

    def torch_path(t: dict) -> torch.Tensor:
        return deform_attn_torch(t["query"], t["key"], t["value"], t["offset"], **cfg)

    def cuda(t: dict) -> torch.Tensor:
        return deform_attn_cuda(t["query"], t["key"], t["value"], t["offset"], **cfg)

    def traffic(t: dict, out: torch.Tensor) -> int:
        return sum(v.numel() * v.element_size() for v in t.values()) + out.numel() * out.element_size()

    impls = [Impl("cuda", "cuda", cuda), Impl("torch grid_sample", "torch", torch_path),
             Impl("torch grid_sample", "torch", torch_path, compile=True)]
    return Case("deform_attn", "8x96x96x96, N1, 3x3, 12 heads, 12 groups, flow-like offsets fp32", make, impls,
                ("query", "key", "value", "offset"), traffic)


# ---------------------------------------------------------------- window attention (VRT's TMSA blocks)


def window_attn_case(mutual: bool) -> Case:
    """``svrt_base``'s stage-1 shifted window attention at 256x256, T=5, 6 heads of 16: self attention
    (5x8x8 windows, relative bias + mask) or one direction of mutual attention (2x8x8 windows, frame 2's
    queries on frame 1's keys: 64 x 64 tokens, the mask's top-left slice, no bias). The candidate row is
    FlexAttention (``impl="flex"``); the torch rows are the model's SDPA path with grouped masks and the
    official matmul-softmax."""
    size, window = ((6, 256, 256), (2, 8, 8)) if mutual else ((5, 256, 256), (5, 8, 8))  # T=5 pads to 6 in pairs
    heads, hd = 6, 16

    def make(device: torch.device, smoke: bool) -> dict:
        sz = size if not smoke else (size[0], 16, 16)
        win, shift = effective_window(sz, window, tuple(w // 2 for w in window))
        n = win[0] * win[1] * win[2]
        tokens = n // 2 if mutual else n
        mask = shifted_window_mask(sz, win, shift, device)[:, :tokens, :tokens]
        gen = torch.Generator(device=device).manual_seed(4)
        dtype = torch.float32 if smoke else torch.bfloat16
        q, k, v = (torch.randn(mask.shape[0], heads, tokens, hd, generator=gen, device=device).to(dtype)
                   for _ in range(3))
        bias = None if mutual else 0.02 * torch.randn(heads, n, n, generator=gen, device=device)
        return {"q": q, "k": k, "v": v, "bias": bias, "mask": mask,
                "groups": mask_groups(sz, win, shift, device, tokens=tokens)}

    def run(impl: str) -> Callable[[dict], torch.Tensor]:
        def fwd(t: dict) -> torch.Tensor:
            return window_attention(t["q"], t["k"], t["v"], scale=hd**-0.5, rel_bias=t["bias"], mask=t["mask"],
                                    mask_groups=t["groups"] if impl == "fused" else None, impl=impl)
        return fwd

    def traffic(t: dict, out: torch.Tensor) -> int:
        used = [t["q"], t["k"], t["v"], t["mask"], out] + ([] if t["bias"] is None else [t["bias"]])
        return sum(x.numel() * x.element_size() for x in used)

    impls = [Impl("FlexAttention (attn=flex)", "cuda", run("flex")),
             Impl("SDPA, grouped masks (attn=fused)", "torch", run("fused")),
             Impl("matmul-softmax (attn=plain)", "torch", run("plain")),
             Impl("matmul-softmax (attn=plain)", "torch", run("plain"), compile=True)]
    label = "mutual, 3072 windows x 64 tokens" if mutual else "self, 1024 windows x 320 tokens, rel bias"
    return Case("window_attn", f"{label}, 6 heads x 16, shifted mask, bf16", make, impls,
                ("q", "k", "v") if mutual else ("q", "k", "v", "bias"), traffic)


# ---------------------------------------------------------------- measuring


def wall_ms(fn: Callable[[], object], reps: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(3):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def gpu_ms(fn: Callable[[], object], reps: int) -> float:
    """Summed device time of the kernels ``fn`` launches, per call (CUPTI records CuPy's kernels too)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
    return total_us / 1000.0 / reps


def copy_bandwidth() -> float:
    """GB/s of ``dst.copy_(src)`` for 1 GiB (bytes read + bytes written)."""
    src = torch.empty(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms = wall_ms(lambda: dst.copy_(src), 20)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def leaves(t: dict, names: tuple[str, ...]) -> dict:
    return {k: (v.detach().requires_grad_() if k in names else v) for k, v in t.items()}


def measure(case: Case, impl: Impl, t: dict, truth: torch.Tensor, device: torch.device, reps: int,
            smoke: bool) -> dict:
    """One row: error, traffic and (unless smoke) timings and peak memory of ``impl``."""
    fwd = torch.compile(impl.fwd, dynamic=False) if impl.compile else impl.fwd
    row: dict = {"kind": impl.kind}
    out = fwd(t)
    row["err"] = ((out.double() - truth).abs().max() / truth.abs().max()).item()
    row["bytes"] = case.traffic(t, out)
    g = torch.randn(out.shape, device=device, generator=torch.Generator(device=device).manual_seed(9)).to(out.dtype)
    lt = leaves(t, case.grads)

    def step() -> None:
        torch.autograd.backward(fwd(lt), g)
        for k in case.grads:
            lt[k].grad = None

    step()  # compiles the backward graph too
    if smoke:
        return row
    with torch.no_grad():
        row["gpu_fwd"] = gpu_ms(lambda: fwd(t), reps)
        row["wall_fwd"] = wall_ms(lambda: fwd(t), reps)
    row["gpu_step"] = gpu_ms(step, reps)
    row["wall_step"] = wall_ms(step, reps)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    row["peak"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return row


def run_case(case: Case, device: torch.device, reps: int, compile: bool, smoke: bool) -> None:
    t = case.make(device, smoke)
    t64 = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in t.items()}
    torch_impl = next(i for i in case.impls if i.kind == "torch")
    truth = torch_impl.fwd(t64).detach()
    for impl in case.impls:
        if (smoke and impl.kind == "cuda") or (impl.compile and (smoke or not compile)):
            continue
        key = f"{impl.name}{' (compiled)' if impl.compile else ''}"
        try:
            case.results[key] = measure(case, impl, t, truth, device, reps, smoke)
        except Exception as exc:  # a formulation that fails (e.g. to compile) says why in its row
            case.results[key] = {"kind": impl.kind, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:70]}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()


def table(cases: list[Case], copy_gbs: float | None) -> str:
    head = ("| op | shape | implementation | gpu ms fwd | wall ms fwd | gpu ms fwd+bwd | wall ms fwd+bwd | GB/s | "
            "% copy | peak MiB | err | vs best torch (fwd / fwd+bwd) |")
    lines = [head, "|" + " --- |" * 12]

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for case in cases:
        torch_rows = [r for r in case.results.values() if r["kind"] == "torch" and "gpu_fwd" in r]
        best_fwd = min((r["gpu_fwd"] for r in torch_rows), default=None)
        best_step = min((r["gpu_step"] for r in torch_rows), default=None)
        for name, r in case.results.items():
            if "error" in r:
                lines.append(f"| {case.op} | {case.shape} | {name} | n/a: {r['error']} |" + " |" * 8)
                continue
            gbs = r["bytes"] / r["gpu_fwd"] / 1e6 if "gpu_fwd" in r else None
            share = 100 * gbs / copy_gbs if gbs is not None and copy_gbs else None
            verdict = "-"
            if best_fwd is not None and "gpu_fwd" in r:
                a, b = best_fwd / r["gpu_fwd"], best_step / r["gpu_step"]
                verdict = f"{a:.2f}x / {b:.2f}x"
                if r["kind"] == "cuda":
                    verdict += " faster" if a > 1 and b > 1 else (" SLOWER" if a < 1 and b < 1 else " mixed")
            lines.append(
                f"| {case.op} | {case.shape} | {name} | {f(r.get('gpu_fwd'), '.3f')} | {f(r.get('wall_fwd'), '.3f')} | "
                f"{f(r.get('gpu_step'), '.3f')} | {f(r.get('wall_step'), '.3f')} | {f(gbs, '.0f')} | "
                f"{f(share, '.0f')} | {f(r.get('peak'), '.0f')} | {r['err']:.1e} | {verdict} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {OPS}")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, torch rows once (checks the script)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    ops = [o for o in args.ops.split(",") if o]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        raise SystemExit(f"bench_ops: unknown ops {unknown}; expected a subset of {OPS}")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench_ops: needs a CUDA device (or --smoke)")
    device = torch.device("cpu" if args.smoke else "cuda")
    builders = {
        "spike": [spike_case],
        "bias_act": [lambda: bias_act_case(torch.float32), lambda: bias_act_case(torch.bfloat16)],
        "upfirdn": [lambda: upfirdn_case("up"), lambda: upfirdn_case("down")],
        "deform_attn": [deform_attn_case],
        "window_attn": [lambda: window_attn_case(False), lambda: window_attn_case(True)],
    }
    cases = [build() for op in ops for build in builders[op]]
    copy_gbs = None if args.smoke else copy_bandwidth()
    for case in tqdm(cases, desc="bench_ops", unit="case"):
        run_case(case, device, args.reps, not args.no_compile, args.smoke)
    name = "CPU smoke run" if args.smoke else torch.cuda.get_device_name()
    header = f"{name}, torch {torch.__version__}, reps {args.reps}"
    if copy_gbs is not None:
        header += f", copy bandwidth {copy_gbs:.0f} GB/s (1 GiB dst.copy_(src), read + write)"
    text = f"{header}\n\n{table(cases, copy_gbs)}\n"
    print("\n" + text)
    if args.markdown is not None:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
