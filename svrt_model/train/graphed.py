"""The training step's forward, loss and backward replayed from one CUDA graph (``train.cuda_graph``).

A small model's step can be bound by the host: a CPU trace of the quality benchmark's step (32 channels,
T=6, 4 clips of 128x128) counts ~30,600 aten calls; at a few microseconds of host time each, that is of
the order of the 260 ms the step takes on an H200 (how busy its GPU is meanwhile is not measured yet). A
CUDA graph records the kernels of one step once and replays them with one launch.

:class:`GraphedStep` captures ``task.score(blur, spikes, sharp)`` and the backward of its loss over static
input buffers, after ``warmup`` eager passes on a side stream (they compile CuPy kernels and let autocast
and the allocator settle; their gradients are discarded). Each step then transforms the batch eagerly
(the raw-spike plan is computed on the host), copies the inputs into the static buffers and replays.
The gradients land in the same buffers every replay, so the loop keeps them (``zero_grad(set_to_none=
False)``) and clips, checks and steps the optimizer eagerly as before: the non-finite guard, EMA,
schedule, checkpoints and validation are unchanged.

A new capture is made when the inputs' shapes, dtypes or the frozen warm-up state differ from the
captured ones (``fix_iter`` makes one extra capture); after ``max_captures`` the step runs eagerly. A
capture that fails (an operation a graph cannot hold) reports one line and the run continues eagerly.
Replayed steps equal eager ones up to rounding: the kernels are the same, the warm-up passes draw from
the random generators (stochastic depth) before the first replay.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from svrt_model.spike.inputs import RawSpikes, model_spikes

__all__ = ["GraphedStep"]


def _inputs(x: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """``(blur, spikes, sharp)`` of a transformed batch, every tensor on ``device``."""
    spikes = model_spikes(x)
    if isinstance(spikes, RawSpikes):
        spikes = RawSpikes(spikes.bits.to(device), spikes.ranges.to(device), spikes.width)
    elif spikes is not None:
        spikes = spikes.to(device)
    return x["blur"].to(device), spikes, x["sharp"].to(device)


def _signature(inputs: tuple[torch.Tensor, Any, torch.Tensor], key: Any) -> tuple:
    def one(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return tuple(v.shape), v.dtype
        if isinstance(v, RawSpikes):
            return "raw", one(v.bits), one(v.ranges), v.width
        return v

    return (key, *(one(v) for v in inputs))


def _copy_into(static: Any, new: Any) -> None:
    if isinstance(static, torch.Tensor):
        static.copy_(new, non_blocking=True)
    elif isinstance(static, RawSpikes):
        static.bits.copy_(new.bits, non_blocking=True)
        static.ranges.copy_(new.ranges, non_blocking=True)


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, RawSpikes):
        return RawSpikes(v.bits.clone(), v.ranges.clone(), v.width)
    return v


class GraphedStep:
    """Replay ``score`` and the backward of its ``'loss'`` from a CUDA graph.

    Args:
        transform: the batch transform (eager, before the graph).
        score: ``score(blur, spikes, sharp) -> {'loss', 'output', 'terms'}`` (``DeblurTask.score``).
        model: the module whose parameters get the gradients.
        device: the CUDA device the step runs on.
        dtype: the autocast dtype (None: float32, no autocast).
        warmup: eager passes before a capture.
        max_captures: captures allowed before the step stays eager.
    """

    def __init__(self, *, transform: Callable[[dict[str, Any]], dict[str, Any]], score: Callable[..., dict[str, Any]],
                 model: nn.Module, device: torch.device, dtype: torch.dtype | None, warmup: int = 2,
                 max_captures: int = 3) -> None:
        self.transform, self.score, self.model, self.device, self.dtype = transform, score, model, device, dtype
        self.warmup, self.max_captures = warmup, max_captures
        self.captures = 0
        self.replays = 0
        self.failed: str | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._signature: tuple | None = None
        self._static: tuple | None = None
        self._out: dict[str, Any] | None = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None,
                              cache_enabled=False)

    def _pass(self, static: tuple) -> dict[str, Any]:
        with self._autocast():
            out = self.score(*static)
        out["loss"].backward()
        return out

    def _capture(self, static: tuple) -> None:
        self._graph = self._out = None  # the old graph's memory goes back before the new one is recorded
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.model.zero_grad(set_to_none=True)
                self._pass(static)
        torch.cuda.current_stream().wait_stream(side)
        self.model.zero_grad(set_to_none=True)  # captured with no gradients: each replay writes them anew
        graph = torch.cuda.CUDAGraph()
        # thread_local: the loader's pin-memory thread keeps allocating page-locked memory during the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._pass(static)
        self._graph, self._out, self._static = graph, out, static
        self.captures += 1

    def __call__(self, raw: dict[str, Any], *, key: Any = None) -> dict[str, Any] | None:
        """One forward + loss + backward of ``raw`` (a batch on the device): the task's result dict with
        ``'input'`` (the transformed batch), or None when this batch must run eagerly (the caller then
        zeroes the gradients and runs the task itself).

        Args:
            raw: the collated batch (``move_batch``).
            key: anything else the captured graph depends on (the frozen warm-up state).
        """
        if self.failed is not None:
            return None
        with torch.no_grad():
            x = self.transform(raw)
        inputs = _inputs(x, self.device)
        signature = _signature(inputs, key)
        if signature != self._signature:
            if self.captures >= self.max_captures:
                return None
            self._signature = signature
            try:
                self._capture(tuple(_clone(v) for v in inputs))
            except Exception as exc:  # an operation a graph cannot hold: the run goes on eagerly
                self.failed = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                self._graph = self._out = self._static = None
                torch.cuda.synchronize()
                warnings.warn(f"train.cuda_graph: the step could not be captured ({self.failed}); training "
                              "continues without the graph", RuntimeWarning, stacklevel=2)
                return None
        else:
            for static, new in zip(self._static, inputs, strict=True):
                _copy_into(static, new)
        self._graph.replay()
        self.replays += 1
        return {**self._out, "input": x}
