"""VRT+Spike (S-VRT) on the GPU: training step and inference forward of ``svrt_base()`` beside the original
implementation's H200 figures, and a per-stage forward breakdown (seed ``001``'s form).

Input: B=1, T=5, 256x256 RGB, K=32 spike voxels at the RGB size (``full``) or half of it (``half``,
Spk-GoPro's case). A training step is forward + Charbonnier loss (delta 1e-3) + backward + AdamW step;
a forward is inference (``torch.inference_mode``, eval). Times: median of ``--iters`` CUDA-event
timings after ``--warmup`` steps; peak = ``torch.cuda.max_memory_allocated`` over the measured steps
(parameters, gradients and AdamW state included; for CUDA-graph rows the capture's peak, which the
replays reuse); "first s" = wall time of the first step (compile and graph capture included).

A row is ``precision:checkpoint:spikes[:compile[:exec]][:option=value ...]``:

- precision ``fp32`` | ``bf16`` (autocast); checkpoint: the backbone policy
  (``VRT.set_grad_checkpointing``, e.g. ``attn+ffn``, ``ffn+align1+attn-mutual``); spikes ``full`` | ``half``;
- compile ``none`` or ``+``-joined ``attn``/``ffn``/``spike`` (``VRTSpike.compile_blocks``); exec
  ``eager`` | ``graph`` (the forward+loss+backward, or the inference forward, captured in one CUDA graph);
- options: ``spike_ckpt=`` parts of ``VRTSpike.set_spike_checkpointing``; ``spike_attn=fused|reference``;
  ``attn=fused|flex|plain`` the backbone's window attention (``VRTSpike.set_attention``);
  ``chunk=<pixels>`` (``set_spike_chunking``); ``deform=auto|reference|cuda``; ``savers=`` the backbone's
  bandwidth savers (``VRT.set_bandwidth_savers``: ``all``, ``none`` or ``+``-joined names); ``drop=`` savers
  taken out of that set (``+``-joined), e.g. ``drop=mask-split+pad-skip``.

Rows that differ in one field attribute that technique's gain. The default set skips compiled rows
(minutes of compilation each); ``--suite compile`` adds them; ``--suite speed`` isolates each backbone saver
(all savers, then all but one, then the savers before them) under the two checkpoint policies that matter;
``--suite savers`` is the short comparison: no savers, all, and each saver alone (with the savers it needs).
Between rows the cached window plans and masks are dropped, so no row's peak holds another row's caches.

``--profile ROW [ROW ...]`` also runs each ROW's training step (eager: a CUDA-graph step replays the same
kernels without the launch gaps) under ``torch.profiler`` for ``--profile-steps`` steps and writes the kernel
time per step grouped by category (GEMM, attention, elementwise, copies, reductions/norms, deformable conv,
convolution, other) and the top kernels (``profile_<n>.md`` in ``--out``).

    PYTHONPATH=$PWD python3 benchmarks/bench_svrt.py --out $OUT
    PYTHONPATH=$PWD python3 benchmarks/bench_svrt.py --suite compile --out $OUT
    PYTHONPATH=$PWD python3 benchmarks/bench_svrt.py --suite speed --no-breakdown --out $OUT \
        --profile bf16:attn+ffn:full bf16:attn+ffn:full:none:eager:savers=residual+mutual-proj+mask-groups
    PYTHONPATH=$PWD python3 benchmarks/bench_svrt.py --rows bf16:attn+ffn:full:none:graph --iters 10
    PYTHONPATH=$PWD python3 benchmarks/bench_svrt.py --measure train --no-breakdown --iters 3 --warmup 1 \
        --rows bf16:attn+ffn:full:attn+ffn+spike:graph:attn=flex      # training step only: one compile per row
    PYTHONPATH=$PWD python3 benchmarks/bench_svrt.py --suite savers --iters 3 --warmup 1 --no-breakdown \
        --profile-steps 2 --out $OUT --profile bf16:attn+ffn:full:none:eager:savers=none bf16:attn+ffn:full:none:eager
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from svrt_model import VRTSpike, svrt_base  # noqa: E402
from svrt_model.errors import UntrainedSpyNetWarning  # noqa: E402
from svrt_model.kernel_profile import format_kernel_tables, kernel_events, summarize_kernels  # noqa: E402
from svrt_model.layers.window_plan import clear_window_caches  # noqa: E402
from svrt_model.precision import precision_context  # noqa: E402
from svrt_model.profiling import cuda_event_ms  # noqa: E402
from svrt_model.vrt import BANDWIDTH_SAVERS, with_needed_savers  # noqa: E402

SHAPE = (1, 5, 3, 256, 256)
BINS = 32

# The original S-VRT on the same H200 (../shared/svrt_reference/README.md): checkpointed VRT attention and
# MLP, chunked nn.MultiheadAttention (<= 49152 tokens), Charbonnier loss.
ORIGINAL = {
    ("train", "fp32"): (2486.0, 39.76),
    ("train", "bf16"): (2081.0, 28.69),
    ("forward", "fp32"): (649.0, 7.35),
    ("forward", "bf16"): (600.0, 6.99),
}
TARGETS = "targets: bf16 training step <= 600 ms at <= 28.7 GiB peak; forward <= 200 ms"

# The original's recipe with our code (reference spike attention in 49152-pixel chunks, attention + MLP
# checkpointed, eager): the in-run baseline the other rows improve on.
_ORIG_RECIPE = "attn+ffn:full:none:eager:spike_attn=reference:chunk=49152"
_MEM = "ffn+align1+attn-mutual"  # the memory-bounded policy (see docs/vrt_spike.md)
SUITES = {
    "default": [
        f"fp32:{_ORIG_RECIPE}",
        "fp32:attn+ffn:full:none:graph",
        f"bf16:{_ORIG_RECIPE}",
        "bf16:attn+ffn:full:none:eager",
        "bf16:attn+ffn:full:none:graph",
        "bf16:attn+ffn:full:none:graph:savers=none",
        f"bf16:{_MEM}:full:none:graph",
        f"bf16:{_MEM}:half:none:graph",
        f"bf16:{_MEM}:full:none:graph:spike_ckpt=tsa+fuse",
        "bf16:ffn+align1:full:none:graph",
    ],
    "compile": [
        f"bf16:{_MEM}:full:spike:graph",
        f"bf16:{_MEM}:full:attn+ffn+spike:graph",
        f"bf16:{_MEM}:half:attn+ffn+spike:graph",
        "bf16:attn+ffn:full:attn+ffn+spike:graph",
        "fp32:attn+ffn:full:attn+ffn+spike:graph",
    ],
}
# Each saver's gain: all savers, all but one (with the savers that need it: mask-split needs window-gather,
# pad-skip needs mask-split), and the savers before this set (the lead's 1058 ms / 989 ms rows).
_DROPS = ("pad-skip", "mask-split+pad-skip", "window-gather+mask-split+pad-skip", "rel-bias", "mlp-packed",
          "align-lean")
_BEFORE = "residual+mutual-proj+mask-groups"
SUITES["speed"] = [
    f"bf16:{policy}:full:none:graph{extra}"
    for policy in ("attn+ffn", _MEM)
    for extra in ("", *(f":drop={d}" for d in _DROPS), f":savers={_BEFORE}")
]


# The lead's short saver comparison (~11 rows, a few minutes): no savers, all, and each saver alone (with
# the savers it needs) on the bf16 training step of the default policy.
SUITES["savers"] = [
    f"bf16:attn+ffn:full:none:graph:savers={s}"
    for s in ("none", "all", *(with_needed_savers(n) for n in BANDWIDTH_SAVERS))
]
SUITES["all"] = SUITES["default"] + SUITES["compile"]
_OPTIONS = ("spike_ckpt", "spike_attn", "attn", "chunk", "deform", "savers", "drop")


def parse_row(text: str) -> dict[str, str]:
    parts = text.split(":")
    fields = [p for p in parts if "=" not in p]
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    if not 3 <= len(fields) <= 5 or fields[0] not in ("fp32", "bf16") or fields[2] not in ("full", "half") \
            or (len(fields) == 5 and fields[4] not in ("eager", "graph")) or set(options) - set(_OPTIONS):
        raise SystemExit(
            f"bad row {text!r}: expected precision:checkpoint:spikes[:compile[:exec]][:option=value...] with precision "
            f"fp32|bf16, spikes full|half, exec eager|graph and options among {_OPTIONS}"
        )
    keys = ("precision", "checkpoint", "spikes", "compile", "exec")
    row = dict(zip(keys, fields, strict=False))
    row.setdefault("compile", "none")
    row.setdefault("exec", "eager")
    row.update({k: options.get(k, "") for k in _OPTIONS})
    return row


def row_name(row: dict[str, str]) -> str:
    name = ":".join(row[k] for k in ("precision", "checkpoint", "spikes", "compile", "exec"))
    return name + "".join(f":{k}={row[k]}" for k in _OPTIONS if row[k])


def configure(model: VRTSpike, row: dict[str, str]) -> None:
    model.set_grad_checkpointing(row["checkpoint"])
    model.set_spike_checkpointing(row["spike_ckpt"] or "none")
    model.set_spike_attention(row["spike_attn"] or "fused")
    model.set_attention(row["attn"] or "fused")
    model.set_spike_chunking(int(row["chunk"]) if row["chunk"] else None)
    model.set_deform_conv_backend(row["deform"] or "auto")
    model.vrt.set_bandwidth_savers(savers_of(row))
    model.compile_blocks(row["compile"])
    clear_window_caches()


def savers_of(row: dict[str, str]) -> str:
    """The row's ``savers`` (default all) without its ``drop`` names, as ``VRT.set_bandwidth_savers`` takes it."""
    chosen = row["savers"] or "all"
    if not row["drop"]:
        return chosen
    names = set(BANDWIDTH_SAVERS) if chosen == "all" else set() if chosen == "none" else set(chosen.split("+"))
    drop = set(row["drop"].split("+"))
    if not drop <= set(BANDWIDTH_SAVERS):
        raise SystemExit(f"bad row option drop={row['drop']!r}: expected '+'-joined names of {BANDWIDTH_SAVERS}")
    return "+".join(n for n in BANDWIDTH_SAVERS if n in names - drop) or "none"


def inputs(spikes: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, t, _, h, w = SHAPE
    hs, ws = (h, w) if spikes == "full" else (h // 2, w // 2)
    rgb = torch.rand(SHAPE, device="cuda", generator=gen)
    target = torch.rand(SHAPE, device="cuda", generator=gen)
    vox = torch.rand(b, t, BINS, hs, ws, device="cuda", generator=gen) * 2
    return rgb, vox, target


def measure_train(model: VRTSpike, row: dict[str, str], iters: int, warmup: int) -> dict[str, float]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    rgb, vox, target = inputs(row["spikes"], gen)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def loss_backward() -> None:
        with precision_context(row["precision"], "cuda"):
            out = model(rgb, vox)
        torch.sqrt((out.float() - target) ** 2 + 1e-6).mean().backward()

    def eager_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_backward()
        opt.step()

    graph = None
    capture_peak = 0.0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    if row["exec"] == "graph":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                eager_step()
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.reset_peak_memory_stats()
        with torch.cuda.graph(graph):
            loss_backward()
        capture_peak = torch.cuda.max_memory_allocated() / 2**30

        def step() -> None:
            graph.replay()
            opt.step()

        step()
    else:
        step = eager_step
        step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(0 if graph is not None else max(warmup - 1, 0)):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = cuda_event_ms(step, iters)
    peak = max(torch.cuda.max_memory_allocated() / 2**30, capture_peak)
    return {"train_ms": statistics.median(times), "train_min": min(times), "train_max": max(times),
            "train_gib": peak, "first_s": first}


def measure_forward(model: VRTSpike, row: dict[str, str], iters: int, warmup: int) -> dict[str, float]:
    gen = torch.Generator(device="cuda").manual_seed(1)
    rgb, vox, _ = inputs(row["spikes"], gen)
    model.eval()

    def forward() -> None:
        with torch.inference_mode(), precision_context(row["precision"], "cuda"):
            model(rgb, vox)

    step = forward
    graph = None
    for _ in range(max(warmup, 1)):
        forward()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    if row["exec"] == "graph":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward()
        step = graph.replay
        step()
    times = cuda_event_ms(step, iters)
    peak = torch.cuda.max_memory_allocated() / 2**30
    model.train()
    return {"forward_ms": statistics.median(times), "forward_gib": peak}


def run_row(model: VRTSpike, row: dict[str, str], iters: int, warmup: int, measure: str = "both") -> dict[str, object]:
    out: dict[str, object] = {"row": row_name(row)}
    try:
        configure(model, row)
        if measure != "forward":
            out.update(measure_train(model, row, iters, warmup))
            gc.collect()
            torch.cuda.empty_cache()
        if measure != "train":
            out.update(measure_forward(model, row, iters, warmup))
    except torch.cuda.OutOfMemoryError:
        out["error"] = "OOM"
    except Exception as exc:  # one broken row must not lose the table
        out["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
    model.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    return out


def _fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(results: list[dict[str, object]], markdown: bool = False) -> str:
    head = ["row", "train ms", "min-max", "GiB", "fwd ms", "fwd GiB", "first s", "orig train ms", "orig GiB",
            "train x", "orig fwd ms", "fwd x"]
    rows = []
    for r in results:
        prec = str(r["row"]).split(":")[0]
        ot, og = ORIGINAL[("train", prec)]
        of, _ = ORIGINAL[("forward", prec)]
        if "error" in r and "train_ms" not in r and "forward_ms" not in r:
            rows.append([str(r["row"]), str(r["error"])[:40], "", "", "", "", "", f"{ot:.0f}", f"{og:.2f}", "",
                         f"{of:.0f}", ""])
            continue
        fwd, train = r.get("forward_ms"), r.get("train_ms")  # either may be absent (--measure)
        rows.append([
            str(r["row"]), _fmt(train, ".1f"), "-" if train is None else f"{r['train_min']:.0f}-{r['train_max']:.0f}",
            _fmt(r.get("train_gib"), ".2f"), _fmt(fwd, ".1f"), _fmt(r.get("forward_gib"), ".2f"),
            _fmt(r.get("first_s"), ".1f"), f"{ot:.0f}", f"{og:.2f}", "-" if train is None else f"{ot / train:.2f}x",
            f"{of:.0f}", "-" if fwd is None else f"{of / fwd:.2f}x",
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), "-" * (sum(widths) + 2 * len(widths))] + [fmt.format(*r) for r in rows])


def target_verdict(results: list[dict[str, object]]) -> str:
    """The fastest bf16 training row within 28.7 GiB and the fastest bf16 forward, against the targets."""
    bf16 = [r for r in results if str(r["row"]).startswith("bf16")]
    fitting = [r for r in bf16 if "train_ms" in r and r["train_gib"] <= 28.7]
    lines = []
    if fitting:
        best = min(fitting, key=lambda r: r["train_ms"])
        met = "MET" if best["train_ms"] <= 600 else "NOT MET"
        lines.append(f"training: fastest bf16 row within 28.7 GiB: {best['row']} {best['train_ms']:.1f} ms at "
                     f"{best['train_gib']:.2f} GiB (target <= 600 ms): {met}")
    else:
        lines.append("training: no bf16 row within 28.7 GiB: NOT MET")
    fwd = [r for r in bf16 if r.get("forward_ms") is not None]
    if fwd:
        best = min(fwd, key=lambda r: r["forward_ms"])
        met = "MET" if best["forward_ms"] <= 200 else "NOT MET"
        lines.append(f"forward: fastest bf16 row: {best['row']} {best['forward_ms']:.1f} ms (target <= 200 ms): {met}")
    return "\n".join(lines)


def stage_breakdown(model: VRTSpike, precision: str, iters: int) -> list[tuple[str, float]]:
    """Median forward time of each stage (CUDA events around the modules, eager inference)."""
    configure(model, parse_row(f"{precision}:none:full"))
    model.eval()
    vrt = model.vrt
    spans: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {"SpyNet flows": (vrt.spynet, vrt.spynet)}
    spans["spike encoder"] = (model.spike_encoder, model.spike_encoder)
    for i, block in enumerate(model.spike_temporal_sa.blocks):
        spans[f"temporal attention, scale {i + 1}"] = (block, block)
    for i in range(1, 8):
        spans[f"VRT stage {i}"] = (getattr(vrt, f"stage{i}"),) * 2
        if i <= 4:
            block = model.cross_attn_fuse.fuse_blocks[i - 1]
            spans[f"fusion, scale {i} (after stage {i})"] = (block, block)
    spans["VRT stage 8"] = (vrt.stage8[0], vrt.stage8[-1])
    events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {k: [] for k in spans}
    handles = []
    for name, (first, last) in spans.items():
        def pre(*_: object, name: str = name) -> None:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            events[name].append((ev, ev))

        def post(*_: object, name: str = name) -> None:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            events[name][-1] = (events[name][-1][0], ev)

        handles += [first.register_forward_pre_hook(pre), last.register_forward_hook(post)]
    gen = torch.Generator(device="cuda").manual_seed(2)
    rgb, vox, _ = inputs("full", gen)
    totals = []
    try:
        for it in range(iters + 1):
            for v in events.values():
                v.clear()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.inference_mode(), precision_context(precision, "cuda"):
                start.record()
                model(rgb, vox)
                end.record()
            torch.cuda.synchronize()
            if it == 0:
                per = {k: [] for k in spans}
                continue
            totals.append(start.elapsed_time(end))
            for k, v in events.items():
                per[k].append(sum(a.elapsed_time(b) for a, b in v))
    finally:
        for h in handles:
            h.remove()
    out = [(k, statistics.median(v)) for k, v in per.items()]
    total = statistics.median(totals)
    out.append(("other (checks, pre-alignment, resizes, output layers)", total - sum(v for _, v in out)))
    out.append(("forward total", total))
    return out


def format_breakdown(items: list[tuple[str, float]], precision: str, markdown: bool = False) -> str:
    total = items[-1][1]
    head = f"per-stage forward, {precision}, eager, spikes at the RGB size (median ms, share of the forward)"
    if markdown:
        lines = [head, "", "| part | ms | % |", "|---|---|---|"]
        lines += [f"| {k} | {v:.2f} | {100 * v / total:.1f} |" for k, v in items]
        return "\n".join(lines)
    width = max(len(k) for k, _ in items)
    return "\n".join([head] + [f"{k:<{width}}  {v:9.2f} ms  {100 * v / total:5.1f}%" for k, v in items])


def profile_row(model: VRTSpike, row: dict[str, str], steps: int, warmup: int) -> str:
    """Kernel time per training step of ``row`` (eager) under ``torch.profiler``: categories and top kernels."""
    from torch.profiler import ProfilerActivity, profile

    configure(model, row)
    model.train()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rgb, vox, target = inputs(row["spikes"], gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with precision_context(row["precision"], "cuda"):
            out = model(rgb, vox)
        torch.sqrt((out.float() - target) ** 2 + 1e-6).mean().backward()
        opt.step()

    for _ in range(max(warmup, 1)):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:  # kernels only: CPU ops would add ~10^5 events
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / steps * 1e3
    summary = summarize_kernels(kernel_events(prof), steps)
    peak = torch.cuda.max_memory_allocated() / 2**30
    title = (f"profile of {row_name(row)} (eager step under the profiler: {wall:.0f} ms wall, peak {peak:.2f} GiB; "
             f"savers {model.vrt.bandwidth_savers})")
    model.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    return format_kernel_tables(summary, title)


def write_outputs(out: Path, results: list[dict[str, object]], breakdown: list[tuple[str, float]] | None,
                  profiles: list[str], breakdown_precision: str) -> None:
    """``table.md`` (table, targets, breakdown, profiles) and ``results.json`` in ``out``, as far as measured."""
    md = [f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", "", format_table(results, True), "",
          TARGETS, "", target_verdict(results)]
    if breakdown:
        md += ["", format_breakdown(breakdown, breakdown_precision, True)]
    for text in profiles:
        md += ["", text]
    (out / "table.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps({"rows": results, "breakdown": breakdown}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="default")
    ap.add_argument("--rows", nargs="+", default=None, help="rows to run instead of the suite")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--breakdown-precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--measure", choices=("both", "train", "forward"), default="both",
                    help="what each row measures (a compiled row compiles once per kind measured)")
    ap.add_argument("--profile", nargs="+", default=[], metavar="ROW",
                    help="also profile these rows' training steps (kernels by category, top kernels)")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json and table.md")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_svrt.py needs a CUDA GPU")
    rows = [parse_row(r) for r in (args.rows or SUITES[args.suite])]
    profiled = [parse_row(r) for r in args.profile]
    for row in rows + profiled:
        savers_of(row)  # a bad drop= fails now, not after minutes of measuring
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  input {SHAPE}, K={BINS}", flush=True)
    warnings.simplefilter("ignore", UntrainedSpyNetWarning)
    torch.manual_seed(0)
    model = VRTSpike(svrt_base()).cuda()
    try:
        from tqdm import tqdm
    except ImportError:  # the table matters, the bar does not
        def tqdm(x, **_):  # type: ignore[no-redef]
            return x
    results = []
    for row in tqdm(rows, desc="bench_svrt", file=sys.stderr):
        res = run_row(model, row, args.iters, args.warmup, measure=args.measure)
        results.append(res)
        print(json.dumps(res), flush=True)
        if args.out:  # after every row: a run cut short keeps a readable table
            write_outputs(args.out, results, None, [], args.breakdown_precision)
    profiles = []
    for i, row in enumerate(profiled):
        try:
            text = profile_row(model, row, args.profile_steps, args.warmup)
        except Exception as exc:  # the measured table must survive a failed profile
            text = f"profile of {row_name(row)} failed: {type(exc).__name__}: {exc}"
        profiles.append(text)
        print(text, flush=True)
        if args.out:
            (args.out / f"profile_{i + 1}.md").write_text(text + "\n")
            write_outputs(args.out, results, None, profiles, args.breakdown_precision)
    breakdown = None
    if not args.no_breakdown:
        breakdown = stage_breakdown(model, args.breakdown_precision, args.iters)
    print(format_table(results))
    print(TARGETS)
    print(target_verdict(results))
    if breakdown:
        print()
        print(format_breakdown(breakdown, args.breakdown_precision))
    if args.out:
        write_outputs(args.out, results, breakdown, profiles, args.breakdown_precision)


if __name__ == "__main__":
    main()
