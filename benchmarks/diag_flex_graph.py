"""Is FlexAttention exact when it is traced into compiled attention cores (GPU)?

Session 8 found that with flex traced into the compiled attention cores, the tiny VRT's float32 output was
3e-3 off the plain path on the H200, and sessions 8-9 kept flex out of those graphs (a graph break that
cost ~128 ms of ``svrt_base``'s training step). Session 10 ran this script and found the cause: q, k, v
reach flex as views of one projection (the heads split out by a permute); on contiguous copies the
traced-in kernel is exact, with or without head-dim padding. The model now traces flex in on contiguous
copies (``attention._flex_in_graph``). Per configuration it prints the float32 relative error against
the eager plain path, forward and (``--grad``) gradients, for the shipped path and the two earlier ones:

    PYTHONPATH=$PWD python3 benchmarks/diag_flex_graph.py [--configs pad nopad hd32] [--grad]

- ``pad``: the tiny test VRT (32 channels x 2 heads in stages 1-7, 48 x 2 in 8-9: head dims 16 and 24);
- ``nopad``: the same with 3 heads in stages 8-9 (head dim 16 everywhere: no padding anywhere);
- ``hd32``: 64 channels x 2 heads in stages 8-9 (head dim 32: a power of two, no padding).

Only a diagnosis: the earlier variants replace the model's in-graph call in this process while they run.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn.attention.flex_attention import flex_attention  # noqa: E402

from svrt_model import VRT  # noqa: E402
from svrt_model.errors import UntrainedSpyNetWarning  # noqa: E402
from svrt_model.layers import attention  # noqa: E402
from tests.model.golden import gpu_test_vrt  # noqa: E402

CONFIGS = {  # name -> (embed dims of stages 8-9, heads of stages 8-9)
    "pad": (48, 2),
    "nopad": (48, 3),
    "hd32": (64, 2),
}


def traced_in_views(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, score_mod) -> torch.Tensor:
    """Flex traced in on q, k, v as they come (views): sessions 7-8, 3e-3 off."""
    return attention._padded(flex_attention, q, k, v, scale, score_mod)


MODES = {  # name -> what a compiled block calls for flex (None: the shipped attention._flex_in_graph)
    "traced in, contiguous q/k/v (shipped)": None,
    "traced in, q/k/v views (sessions 7-8)": traced_in_views,
    "outside the graph (sessions 8-9)": torch.compiler.disable(attention._flex_cuda),
}


def build(config: str) -> VRT:
    dims, heads = CONFIGS[config]
    return gpu_test_vrt(embed_dims=(32,) * 7 + (dims, dims), num_heads=(2,) * 7 + (heads, heads))


def run(model: VRT, x: torch.Tensor, grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings(), torch.set_grad_enabled(grad):
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        out = model(x)
    if not grad:
        return out.detach(), []
    out.square().mean().backward()
    return out.detach(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    ap.add_argument("--grad", action="store_true", help="also compare gradients (slower compile)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("diag_flex_graph: needs a CUDA GPU")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    shipped = attention._flex_in_graph
    x = torch.rand(1, 5, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    print("| config | head dims (1-7 / 8-9) | flex | output rel err | max grad rel err | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config in args.configs:
        dims, heads = CONFIGS[config]
        model = build(config)
        model.set_attention("plain")
        ref, ref_grads = run(model, x, args.grad)
        for mode, fn in MODES.items():
            torch._dynamo.reset()
            attention._flex_in_graph = fn or shipped
            model.set_attention("flex")
            model.compile_blocks("attn")
            start = time.perf_counter()
            try:
                out, grads = run(model, x, args.grad)
            finally:
                attention._flex_in_graph = shipped
                model.compile_blocks("none")
            g = max((rel(a, b) for a, b in zip(grads, ref_grads, strict=True) if b.norm() > 0), default=float("nan"))
            print(f"| {config} | 16 / {dims // heads} | {mode} | {rel(out, ref):.2e} | {g:.2e} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
