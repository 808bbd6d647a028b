"""Where a forward / training step spends its time and memory, part by part (stages 1-8, spike encoder,
temporal attention and fusion per scale): the per-stage table of seed ``001_*``, measured.

A part is a :class:`Span` of modules (its first and last module by name, e.g. ``stage8.0`` .. ``norm``).
Forward pre/post hooks time the span's forward; small autograd identities placed on the span's inputs and
outputs time its backward (the output's fires when the span's backward starts, the inputs' when it has
produced their gradients), so recomputation inside a checkpointed span is counted where it happens. On
CUDA, times come from CUDA events (no synchronisation inside the step) and memory from the allocator:
``fwd peak`` (the most the span allocated on top of what was held when it started), ``kept`` (what it left
allocated: activations saved for backward and its output), ``bwd peak``; on the CPU memory is not
measured. The model's inputs are made to require gradients so every span's backward has an end.

Spans never nest; a span called several times in a step (a block reused per scale) is summed. Rows come
in the order the parts first run. Hooks cost
a little time; the whole-step rows come from the same run, so shares add up (the ``other`` row is the
step's time outside every span: pre-alignment, losses, glue).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from svrt_model.errors import ModelConfigError
from svrt_model.precision import precision_context
from svrt_model.vrt import VRT

__all__ = ["Span", "StageProfile", "StageRow", "model_spans", "profile_stages", "vrt_spans"]


@dataclass(frozen=True)
class Span:
    """A part of the model: modules ``first`` .. ``last`` (dotted names; equal for one module)."""

    name: str
    first: str
    last: str


def vrt_spans(prefix: str = "") -> list[Span]:
    """VRT's parts in execution order (``prefix``: where VRT sits in a larger model, e.g. ``"vrt."``)."""
    p = prefix
    spans = [Span("SpyNet flows", f"{p}spynet", f"{p}spynet"), Span("conv_first", f"{p}conv_first", f"{p}conv_first")]
    spans += [Span(f"stage {i}", f"{p}stage{i}", f"{p}stage{i}") for i in range(1, 8)]
    spans.append(Span("stage 8 (reconstruction)", f"{p}stage8.0", f"{p}norm"))
    spans.append(Span("conv_after_body + conv_last", f"{p}conv_after_body", f"{p}conv_last"))
    return spans


def model_spans(model: nn.Module) -> list[Span]:
    """The parts of a VRT or of a model built around one as ``.vrt`` (VRT+Spike): the spike encoder, the
    temporal attention of each scale and the fusion of each scale when present, then VRT's parts."""
    if isinstance(model, VRT):
        return vrt_spans()
    if not isinstance(getattr(model, "vrt", None), VRT):
        raise ModelConfigError(f"profile_stages: no spans known for {type(model).__name__}; pass spans=[Span(...)]")
    names = dict(model.named_modules())
    spans = []
    if "spike_encoder" in names:
        spans.append(Span("spike encoder", "spike_encoder", "spike_encoder"))
    for group, label in (("spike_temporal_sa.blocks", "temporal attention"), ("cross_attn_fuse.fuse_blocks", "fusion")):
        if group in names:
            spans += [Span(f"{label} scale {i + 1}", f"{group}.{i}", f"{group}.{i}") for i in range(len(names[group]))]
    return spans + vrt_spans("vrt.")


@dataclass
class _Call:
    """One execution of a span: clock marks (and CUDA memory) of its forward and backward."""

    fwd: list[Any] = field(default_factory=list)
    bwd_start: Any = None
    bwd_ends: list[Any] = field(default_factory=list)
    mem_base: int = 0
    fwd_peak: int = 0
    kept: int = 0
    bwd_base: int = 0
    bwd_peak: int = 0


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def ms(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3


class _Mark(torch.autograd.Function):
    """Identity whose backward calls ``callback`` (a clock mark in the backward pass)."""

    @staticmethod
    def forward(ctx: Any, callback: Callable[[], None], x: torch.Tensor) -> torch.Tensor:
        ctx.callback = callback
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        ctx.callback()
        return None, grad


def _mark_tensors(obj: Any, callback: Callable[[], None]) -> tuple[Any, int]:
    """``obj`` (a tensor or a tuple/list of them, nested) with every grad-requiring tensor passed through
    :class:`_Mark`; also how many were marked."""
    if isinstance(obj, torch.Tensor):
        return (_Mark.apply(callback, obj), 1) if obj.requires_grad else (obj, 0)
    if isinstance(obj, (tuple, list)):
        items, n = [], 0
        for o in obj:
            v, k = _mark_tensors(o, callback)
            items.append(v)
            n += k
        return type(obj)(items), n
    return obj, 0


class _Recorder:
    def __init__(self, model: nn.Module, spans: Sequence[Span], clock: _Clock) -> None:
        self.clock, self.phase = clock, "off"
        self.calls: dict[str, list[_Call]] = {s.name: [] for s in spans}
        self.handles = []
        modules = dict(model.named_modules())
        for s in spans:
            for n in (s.first, s.last):
                if n not in modules:
                    raise ModelConfigError(f"profile_stages: span {s.name!r} names module {n!r}, which "
                                           f"{type(model).__name__} does not have")
            self.handles.append(modules[s.first].register_forward_pre_hook(self._pre(s)))
            self.handles.append(modules[s.last].register_forward_hook(self._post(s)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _memory(self) -> int:
        return torch.cuda.memory_allocated() if self.clock.cuda else 0

    def _peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.clock.cuda else 0

    def _reset_peak(self) -> None:
        if self.clock.cuda:
            torch.cuda.reset_peak_memory_stats()

    def _pre(self, span: Span) -> Callable:
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            if self.phase != "forward":  # e.g. recomputation inside a checkpoint during backward
                return None
            call = _Call()
            self.calls[span.name].append(call)
            self._reset_peak()
            call.mem_base = self._memory()
            call.fwd.append(self.clock.mark())

            def end() -> None:
                call.bwd_ends.append(self.clock.mark())
                call.bwd_peak = max(call.bwd_peak, self._peak() - call.bwd_base)

            marked, _ = _mark_tensors(args, end)
            return marked

        return hook

    def _post(self, span: Span) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            if self.phase != "forward":
                return None
            call = self.calls[span.name][-1]
            call.fwd.append(self.clock.mark())
            call.fwd_peak, call.kept = self._peak() - call.mem_base, self._memory() - call.mem_base

            def start() -> None:
                if call.bwd_start is None:  # several outputs: the first gradient to arrive starts it
                    self._reset_peak()
                    call.bwd_base = self._memory()
                    call.bwd_start = self.clock.mark()

            marked, _ = _mark_tensors(output, start)
            return marked

        return hook


@dataclass(frozen=True)
class StageRow:
    """One part: median over the measured steps of its summed calls (ms; MiB on CUDA, else None)."""

    name: str
    calls: int  # executions per step
    forward_ms: float
    backward_ms: float | None
    fwd_peak_mib: float | None
    kept_mib: float | None
    bwd_peak_mib: float | None

    @property
    def total_ms(self) -> float:
        return self.forward_ms + (self.backward_ms or 0.0)


@dataclass(frozen=True)
class StageProfile:
    """The per-part table of one configuration (:func:`profile_stages`)."""

    rows: list[StageRow]
    step_forward_ms: float
    step_backward_ms: float | None
    device: str
    description: str

    @property
    def step_ms(self) -> float:
        return self.step_forward_ms + (self.step_backward_ms or 0.0)

    def table(self) -> str:
        """Markdown: one row per part, then ``other`` and the whole step, with each part's share of the step."""

        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        lines = [f"Per-part time and memory: {self.description} ({self.device})", "",
                 "| part | forward ms | backward ms | total ms | share | fwd peak MiB | kept MiB | bwd peak MiB |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.forward_ms:.2f} | {num(r.backward_ms, '.2f')} | {r.total_ms:.2f} | "
                         f"{100 * r.total_ms / self.step_ms:.1f}% | {num(r.fwd_peak_mib, '.1f')} | "
                         f"{num(r.kept_mib, '.1f')} | {num(r.bwd_peak_mib, '.1f')} |")
        fwd_other = self.step_forward_ms - sum(r.forward_ms for r in self.rows)
        bwd_other = None if self.step_backward_ms is None else self.step_backward_ms - sum(
            r.backward_ms or 0.0 for r in self.rows)
        other = fwd_other + (bwd_other or 0.0)
        lines.append(f"| other (outside these parts) | {fwd_other:.2f} | {num(bwd_other, '.2f')} | {other:.2f} | "
                     f"{100 * other / self.step_ms:.1f}% | - | - | - |")
        lines.append(f"| **whole step** | {self.step_forward_ms:.2f} | {num(self.step_backward_ms, '.2f')} | "
                     f"{self.step_ms:.2f} | 100% | - | - | - |")
        return "\n".join(lines)


def profile_stages(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    spans: Sequence[Span] | None = None,
    mode: str = "train",
    precision: str = "fp32",
    iters: int = 3,
    warmup: int = 1,
    description: str = "",
) -> StageProfile:
    """Time (and on CUDA, measure memory of) every part of ``model(*inputs)``.

    Args:
        model: on the device of ``inputs``.
        inputs: the forward's positional arguments (e.g. ``(rgb, spikes)``); they are made to require
            gradients in ``"train"`` mode.
        spans: the parts (default :func:`model_spans`).
        mode: ``"train"`` (forward + L1 loss against a fixed random target + backward) or ``"forward"``
            (no gradients).
        precision: see :mod:`svrt_model.precision`.
        iters, warmup: measured and unmeasured steps; each row is the median over the measured ones.
        description: the configuration, printed above the table.
    """
    if mode not in ("train", "forward"):
        raise ModelConfigError(f"profile_stages: mode must be 'train' or 'forward', got {mode!r}")
    if iters < 1 or warmup < 0:
        raise ModelConfigError(f"profile_stages: iters={iters}, warmup={warmup}; expected iters >= 1, warmup >= 0")
    spans = list(spans) if spans is not None else model_spans(model)
    device = inputs[0].device
    clock = _Clock(device)
    train = mode == "train"
    inputs = [x.detach().requires_grad_(train and x.is_floating_point()) for x in inputs]
    model.train(train)
    recorder = _Recorder(model, spans, clock)
    per_iter: list[tuple[dict[str, list[_Call]], float, float | None, Any]] = []
    target = None
    try:
        for it in range(warmup + iters):
            recorder.calls = {s.name: [] for s in spans}
            model.zero_grad(set_to_none=True)
            recorder.phase = "forward"
            t0 = clock.mark()
            with torch.set_grad_enabled(train), precision_context(precision, device):
                out = model(*inputs)
                if target is None:
                    target = torch.rand(out.shape, generator=torch.Generator().manual_seed(0)).to(device)
                loss = (out.float() - target).abs().mean() if train else None
            t1 = clock.mark()
            recorder.phase = "backward"
            if train:
                loss.backward()
            t2 = clock.mark()
            recorder.phase = "off"
            if clock.cuda:
                torch.cuda.synchronize(device)
            if it >= warmup:
                per_iter.append((recorder.calls, clock.ms(t0, t1), clock.ms(t1, t2) if train else None, t0))
    finally:
        recorder.remove()
        model.zero_grad(set_to_none=True)
    rows = []
    mib = 2.0**20
    for s in spans:
        fwd, bwd, peaks, kept, bpeaks = [], [], [], [], []
        for calls, _, _, _ in per_iter:
            if not calls[s.name]:
                raise ModelConfigError(f"profile_stages: span {s.name!r} never ran in a step")
            fwd.append(sum(clock.ms(c.fwd[0], c.fwd[1]) for c in calls[s.name]))
            if train:
                if any(c.bwd_start is None or not c.bwd_ends for c in calls[s.name]):
                    raise ModelConfigError(f"profile_stages: span {s.name!r} had no backward (its output does not "
                                           "reach the loss, or its inputs need no gradient)")
                bwd.append(sum(max(clock.ms(c.bwd_start, e) for e in c.bwd_ends) for c in calls[s.name]))
            peaks.append(max(c.fwd_peak for c in calls[s.name]) / mib)
            kept.append(sum(c.kept for c in calls[s.name]) / mib)
            bpeaks.append(max(c.bwd_peak for c in calls[s.name]) / mib)
        rows.append(StageRow(
            name=s.name, calls=len(per_iter[0][0][s.name]), forward_ms=statistics.median(fwd),
            backward_ms=statistics.median(bwd) if train else None,
            fwd_peak_mib=statistics.median(peaks) if clock.cuda else None,
            kept_mib=statistics.median(kept) if clock.cuda else None,
            bwd_peak_mib=statistics.median(bpeaks) if clock.cuda and train else None,
        ))
    calls, _, _, t0 = per_iter[0]
    order = {s.name: clock.ms(t0, calls[s.name][0].fwd[0]) for s in spans}
    rows.sort(key=lambda r: order[r.name])  # execution order (fusion after each encoder stage, ...)
    step_f = statistics.median(f for _, f, _, _ in per_iter)
    step_b = statistics.median(b for _, _, b, _ in per_iter) if train else None
    return StageProfile(rows=rows, step_forward_ms=step_f, step_backward_ms=step_b, device=str(device),
                        description=description or f"{type(model).__name__} {mode} {precision}")
