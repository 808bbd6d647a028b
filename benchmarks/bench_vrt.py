"""VRT backbone on the GPU: forward and training-step time and peak memory, beside the official figures.

Configs: GoPro deblurring (input 1x6x3x192x192) and the S-VRT baseline (1x5x3x256x256); precisions
fp32 / bf16 (autocast); attention fused (SDPA) / plain (matmul-softmax, as the official code);
gradient checkpointing policies (``VRT.set_grad_checkpointing``); optional compiled blocks. The
official figures (issue 6) were measured with the official implementation on the same H100.

Rows are selectable so a short run fits in one device call, e.g.::

    python3 benchmarks/bench_vrt.py --suite quick
    python3 benchmarks/bench_vrt.py --suite full --only gopro
    python3 benchmarks/bench_vrt.py --row gopro:train:bf16:fused:ffn+align --iters 10
    python3 benchmarks/bench_vrt.py --probe-sdpa          # which SDPA backend runs with an additive mask

A row is ``config:mode:precision:attention:checkpoint[:compile[:deform_backend[:graph]]]``; ``graph``
captures the whole step in one CUDA graph (see ``svrt_model.profiling.profile_vrt``).

``--alignment dcn,deform_attn`` runs every row once per parallel-warping alignment (``VRTConfig.alignment``:
the official deformable convolution, or guided deformable attention), e.g. a training step with each::

    python3 benchmarks/bench_vrt.py --row gopro:train:bf16:fused:ffn --alignment dcn,deform_attn
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from svrt_model.config import VRTConfig, gopro_deblurring, svrt_baseline  # noqa: E402
from svrt_model.profiling import ProfileResult, profile_vrt  # noqa: E402

CONFIGS: dict[str, tuple[VRTConfig, tuple[int, int, int, int, int]]] = {
    "gopro": (gopro_deblurring(), (1, 6, 3, 192, 192)),
    "svrt": (svrt_baseline(), (1, 5, 3, 256, 256)),
}

# Official VRT on the same H100 (issue 6): (config, mode, precision) -> (ms, GiB or None); the
# official training step checkpoints the second attention group of every stage ("official" policy).
OFFICIAL: dict[tuple[str, str, str], tuple[float, float | None]] = {
    ("gopro", "train", "fp32"): (1537.0, 28.8),
    ("gopro", "train", "bf16"): (1365.0, 22.2),
    ("gopro", "forward", "fp32"): (412.0, 5.6),
    ("svrt", "train", "fp32"): (2506.0, 34.8),
    ("svrt", "forward", "fp32"): (646.0, None),
}

# "attn+ffn" checkpointing is the official training setup (use_checkpoint_attn/ffn = true in KAIR's
# 006_train_vrt_videodeblurring_gopro.json); plain attention + attn+ffn re-creates the official step.
_G = "gopro:train:bf16:fused"
SUITES: dict[str, list[str]] = {
    "quick": [
        "gopro:forward:fp32:fused:none",
        "gopro:train:fp32:fused:attn+ffn",
        f"{_G}:ffn+align:none:auto:graph",
        f"{_G}:ffn:ffn:auto:graph",
        f"{_G}:ffn+align1:attn+ffn:auto:graph",
    ],
    "full": [
        "gopro:forward:fp32:plain:none",
        "gopro:forward:fp32:fused:none",
        "gopro:forward:bf16:fused:none",
        "gopro:forward:bf16:fused:none:none:auto:graph",
        "gopro:train:fp32:plain:attn+ffn",
        "gopro:train:fp32:fused:attn+ffn",
        "gopro:train:fp32:fused:all:none:auto:graph",
        "gopro:train:bf16:plain:attn+ffn",
        f"{_G}:none",
        f"{_G}:ffn",
        f"{_G}:ffn+align",
        f"{_G}:ffn+align:none:reference",
        f"{_G}:ffn+align:none:auto:graph",
        f"{_G}:attn:none:auto:graph",
        f"{_G}:ffn:ffn:auto:graph",
        f"{_G}:ffn+align:ffn:auto:graph",
        "svrt:forward:fp32:plain:none",
        "svrt:forward:fp32:fused:none",
        "svrt:train:fp32:plain:attn+ffn",
        "svrt:train:fp32:fused:attn+ffn",
        "svrt:train:bf16:fused:ffn+align:none:auto:graph",
        "svrt:train:bf16:fused:ffn+align:ffn:auto:graph",
        f"{_G}:ffn:attn+ffn:auto:graph",
        f"{_G}:ffn+align1:attn+ffn:auto:graph",
        f"{_G}:ffn+align-full:attn+ffn:auto:graph",
        "gopro:train:fp32:fused:ffn+align1:attn+ffn:auto:graph",
        f"{_G}:ffn+align:attn+ffn:auto:graph",
        f"{_G}:attn+ffn:attn+ffn:auto:graph",
    ],
}


def parse_row(text: str) -> dict[str, str]:
    parts = text.split(":")
    if not 5 <= len(parts) <= 8 or parts[0] not in CONFIGS or (len(parts) == 8 and parts[7] not in ("graph", "eager")):
        raise SystemExit(
            f"bad row {text!r}: expected config:mode:precision:attention:checkpoint[:compile[:deform[:graph|eager]]] "
            f"with config in "
            f"{sorted(CONFIGS)}"
        )
    keys = ("config", "mode", "precision", "attention", "checkpoint", "compile", "deform", "graph")
    row = dict(zip(keys[: len(parts)], parts, strict=True))
    row.setdefault("compile", "none")
    row.setdefault("deform", "auto")
    row.setdefault("graph", "eager")
    return row


def run_row(row: dict[str, str], models: dict[str, torch.nn.Module], iters: int, warmup: int) -> dict[str, object]:
    from svrt_model.vrt import VRT

    config, shape = CONFIGS[row["config"]]
    config = dataclasses.replace(config, alignment=row.get("align", "dcn"))
    key = f"{row['config']}:{config.alignment}"
    if key not in models:
        models.clear()
        gc.collect()
        torch.cuda.empty_cache()
        torch.manual_seed(0)
        models[key] = VRT(config).cuda()
    out: dict[str, object] = dict(row)
    try:
        res: ProfileResult = profile_vrt(
            config, shape=shape, mode=row["mode"], precision=row["precision"], attention=row["attention"],
            checkpoint=row["checkpoint"], compile=row["compile"], deform_backend=row["deform"],
            graph=row["graph"] == "graph", iters=iters,
            warmup=warmup, model=models[key],
        )
        out.update(ms=res.median_ms, min_ms=res.min_ms, max_ms=res.max_ms, gib=res.peak_gib, first_s=res.first_call_s)
    except torch.cuda.OutOfMemoryError:
        out.update(ms=None, gib=None, error="OOM")
    except Exception as exc:  # report and keep going: one broken row must not lose the table
        out.update(ms=None, gib=None, error=" ".join(f"{type(exc).__name__}: {exc}".split())[:200])
    models[key].zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    return out


def format_table(results: list[dict[str, object]]) -> str:
    head = (
        f"{'row':<52} {'ms':>8} {'min-max':>15} {'GiB':>6} {'first s':>8} | {'official ms':>11} {'GiB':>5} "
        f"{'speed-up':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        name = ":".join(str(r[k]) for k in ("config", "mode", "precision", "attention", "checkpoint"))
        if r["compile"] != "none" or r["deform"] != "auto" or r["graph"] != "eager":
            name += f":{r['compile']}:{r['deform']}:{r['graph']}"
        if r.get("align", "dcn") != "dcn":
            name += f" [{r['align']}]"
        off = OFFICIAL.get((str(r["config"]), str(r["mode"]), str(r["precision"])))
        off_ms = f"{off[0]:.0f}" if off else "-"
        off_gib = f"{off[1]:.1f}" if off and off[1] is not None else "-"
        if r.get("ms") is None:
            lines.append(f"{name:<52} {str(r.get('error', '?'))[:60]:>60} | {off_ms:>11} {off_gib:>5}")
            continue
        spread = f"{r['min_ms']:.0f}-{r['max_ms']:.0f}"
        speed = f"{off[0] / r['ms']:.2f}x" if off else "-"
        lines.append(
            f"{name:<52} {r['ms']:>8.1f} {spread:>15} {r['gib']:>6.2f} {r['first_s']:>8.1f} | {off_ms:>11} "
            f"{off_gib:>5} {speed:>8}"
        )
    return "\n".join(lines)


def probe_sdpa(out_dir: Path | None) -> str:
    """Which SDPA backends accept VRT's shapes with an additive (learned) bias, and which one runs by default."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    lines = ["SDPA probe (bf16, fwd+bwd, q/k/v (576, 6, 384, 16); bias requires grad):"]
    dev = torch.device("cuda")
    q, k, v = (torch.randn(576, 6, 384, 16, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    cases = {
        "no mask": None,
        "bias (1,nH,N,N) broadcast": torch.randn(1, 6, 384, 384, device=dev, dtype=torch.bfloat16),
        "bias (nW,nH,N,N)": torch.randn(576, 6, 384, 384, device=dev, dtype=torch.bfloat16),
    }
    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    for case, bias in cases.items():
        if bias is not None:
            bias.requires_grad_(True)
        for name, backend in backends.items():
            try:
                with sdpa_kernel([backend]):
                    for _ in range(2):
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                        o.float().square().mean().backward()
                        torch.cuda.synchronize()
                        dt = (time.perf_counter() - t0) * 1e3
                status = f"ok {dt:7.2f} ms fwd+bwd"
            except Exception as exc:
                status = f"refused ({type(exc).__name__})"
            lines.append(f"  {case:<28} {name:<10} {status}")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            o.float().square().mean().backward()
            torch.cuda.synchronize()
        names = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() or "fmha" in e.key.lower()
                        or "flash" in e.key.lower() or "cudnn" in e.key.lower()})
        lines.append(f"  {case:<28} default -> kernels: {', '.join(n[:60] for n in names) or '(none matched)'}")
    text = "\n".join(lines)
    if out_dir:
        (out_dir / "sdpa_probe.txt").write_text(text + "\n")
    return text


def profile_row(text: str, out_dir: Path | None) -> str:
    """torch.profiler summary of one training step / forward of a row: the top CUDA kernels."""
    from torch.profiler import ProfilerActivity, profile

    from svrt_model.vrt import VRT

    row = parse_row(text)
    config, shape = CONFIGS[row["config"]]
    torch.manual_seed(0)
    model = VRT(config).cuda()
    kwargs = dict(
        shape=shape, mode=row["mode"], precision=row["precision"], attention=row["attention"],
        checkpoint=row["checkpoint"], compile=row["compile"], deform_backend=row["deform"], model=model,
        graph=row["graph"] == "graph",
    )
    profile_vrt(config, iters=1, warmup=1, **kwargs)  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        profile_vrt(config, iters=1, warmup=0, **kwargs)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
    math = sum(e.count for e in prof.key_averages() if e.key == "aten::_scaled_dot_product_attention_math")
    fused = sum(e.count for e in prof.key_averages() if e.key == "aten::scaled_dot_product_attention")
    text_out = f"profile of {text} (SDPA calls {fused}, of which math fallback {math})\n{table}"
    if out_dir:
        (out_dir / "profile.txt").write_text(text_out)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return text_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), help="a predefined list of rows")
    ap.add_argument("--row", action="append", default=[], help="add a row (repeatable); see the module docstring")
    ap.add_argument("--only", default="", help="keep rows containing this substring (e.g. gopro:train:bf16)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--probe-sdpa", action="store_true", help="report which SDPA backend runs with an additive mask")
    ap.add_argument("--profile-row", default=None, help="print the top CUDA kernels of one row (torch.profiler)")
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json / table.txt")
    ap.add_argument("--alignment", default="dcn",
                    help="comma-separated VRTConfig.alignment values; every row runs once per value")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_vrt.py needs a CUDA GPU")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    if args.probe_sdpa:
        print(probe_sdpa(args.out), flush=True)
    if args.profile_row:
        print(profile_row(args.profile_row, args.out), flush=True)
    rows = [parse_row(r) for r in (SUITES[args.suite] if args.suite else []) + args.row]
    rows = [r for r in rows if args.only in ":".join(r.values())]
    alignments = [a for a in args.alignment.split(",") if a]
    if not alignments or not set(alignments) <= {"dcn", "deform_attn"}:
        raise SystemExit(f"bench_vrt: --alignment {args.alignment!r}; expected a comma list of dcn, deform_attn")
    rows = [{**r, "align": a} for r in rows for a in alignments]
    results: list[dict[str, object]] = []
    models: dict[str, torch.nn.Module] = {}
    try:
        from tqdm import tqdm
    except ImportError:  # the table matters, the bar does not
        def tqdm(x, **_):  # type: ignore[no-redef]
            return x
    for row in tqdm(rows, desc="bench_vrt", file=sys.stderr):
        res = run_row(row, models, args.iters, args.warmup)
        results.append(res)
        print(json.dumps(res), flush=True)
        if args.out:
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = format_table(results)
    print(table)
    if args.out:
        (args.out / "table.txt").write_text(table + "\n")


if __name__ == "__main__":
    main()
