"""Time and memory of VRT / VRT+Spike forward passes and training steps on a GPU: one library function
shared by ``benchmarks/bench_vrt.py`` and ``svrt-model profile``; :func:`profile_model_stages` breaks a
step down per part (:mod:`svrt_model.stage_profile`), on the GPU or the CPU.

A VRT+Spike configuration (:class:`~svrt_model.vrt_spike_config.VRTSpikeConfig`) is fed random RGB
frames and normally distributed voxels (what a normalised ``log1p`` transform gives) of K bins at
``spike_scale`` times the RGB size.

A training step is forward + an L1 loss + backward (no optimizer), in train mode; a forward is an
inference pass under ``torch.inference_mode`` in eval mode. Times come from CUDA events around each
measured iteration after warm-up iterations (so cuDNN autotuning and ``torch.compile`` stay out of
them; compile time is reported separately); the median is reported with the spread. Peak memory is
``torch.cuda.max_memory_allocated`` over the measured iterations, parameters included.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from svrt_model.config import VRTConfig
from svrt_model.errors import ModelConfigError, UntrainedSpyNetWarning
from svrt_model.precision import PRECISIONS, precision_context
from svrt_model.stage_profile import StageProfile, profile_stages
from svrt_model.vrt import VRT
from svrt_model.vrt_spike import VRTSpike
from svrt_model.vrt_spike_config import VRTSpikeConfig

__all__ = ["MODES", "PRECISIONS", "ProfileResult", "profile_model_stages", "profile_vrt"]

MODES = ("train", "forward")


@dataclass(frozen=True)
class ProfileResult:
    """One measurement. Times in milliseconds, memory in GiB (2**30 bytes)."""

    mode: str
    shape: tuple[int, int, int, int, int]
    precision: str
    attention: str
    checkpoint: str
    compile: str
    graph: bool
    deform_backend: str
    median_ms: float
    min_ms: float
    max_ms: float
    peak_gib: float
    iters: int
    first_call_s: float


def cuda_event_ms(fn: Callable[[], object], iters: int, device: torch.device | str | None = None) -> list[float]:
    """``iters`` timings of ``fn`` in ms, each between two CUDA events and a synchronisation of ``device``."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end))
    return times


def _build(config: VRTConfig | VRTSpikeConfig, device: torch.device, seed: int) -> VRT | VRTSpike:
    torch.manual_seed(seed)
    if isinstance(config, VRTConfig):
        return VRT(config).to(device)
    if isinstance(config, VRTSpikeConfig):
        return VRTSpike(config).to(device)
    raise ModelConfigError(f"profile: expected a VRTConfig or a VRTSpikeConfig, got {type(config).__name__}")


def _inputs(config: VRTConfig | VRTSpikeConfig, shape: tuple[int, int, int, int, int], spike_scale: float,
            device: torch.device, seed: int) -> list[torch.Tensor]:
    """Random frames in [0, 1] (and for VRT+Spike, normal voxels at ``spike_scale``), seeded."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(shape, device=device, generator=gen)
    if not isinstance(config, VRTSpikeConfig):
        return [x]
    b, t, _, h, w = shape
    hs, ws = h * spike_scale, w * spike_scale
    if hs != int(hs) or ws != int(ws) or hs < 1 or ws < 1:
        raise ModelConfigError(f"profile: spike_scale {spike_scale} of {h}x{w} frames is not a whole spike size; "
                               "use 1 or 0.5 with even sizes")
    spikes = torch.randn((b, t, config.spike_bins, int(hs), int(ws)), device=device, generator=gen)
    return [x, spikes]


def _set_switches(model: VRT | VRTSpike, attention: str, checkpoint: str, compile: str, deform_backend: str) -> None:
    model.set_attention(attention)
    model.set_grad_checkpointing(checkpoint)
    model.compile_blocks(compile)
    model.set_deform_conv_backend(deform_backend)


def profile_vrt(
    config: VRTConfig | VRTSpikeConfig,
    *,
    shape: tuple[int, int, int, int, int],
    spike_scale: float = 1.0,
    mode: str = "train",
    precision: str = "bf16",
    attention: str = "fused",
    checkpoint: str = "none",
    compile: str = "none",
    deform_backend: str = "auto",
    graph: bool = False,
    iters: int = 5,
    warmup: int = 2,
    device: str = "cuda",
    seed: int = 0,
    model: VRT | VRTSpike | None = None,
) -> ProfileResult:
    """Measure one configuration of VRT or VRT+Spike.

    Args:
        config: the network (e.g. :func:`svrt_model.config.gopro_deblurring`, :func:`svrt_model.svrt_base`).
        shape: input ``(B, T, 3, H, W)``.
        spike_scale: VRT+Spike: spike frames are ``spike_scale`` times the RGB size (1 or 0.5).
        mode: ``"train"`` (forward + backward) or ``"forward"`` (inference).
        precision: one of :data:`PRECISIONS`.
        attention: ``"fused"`` or ``"plain"`` (see ``VRT.set_attention``).
        checkpoint: a ``VRT.set_grad_checkpointing`` policy.
        compile: ``VRT.compile_blocks`` parts (``"none"``, ``"ffn"``, ...).
        deform_backend: backend of ``kernels.deform_conv.deform_conv2d``.
        graph: capture the whole step (forward, loss, backward) in one CUDA graph after the warm-up
            and time its replays: no per-op CPU launch cost (the eager step is bound by it). Gradients
            then live in the graph's memory pool and are overwritten by each replay.
        iters, warmup: measured and warm-up iterations.
        device: a CUDA device.
        seed: seeds weights and inputs (random inputs in [0, 1]; never zeros).
        model: reuse a model already on ``device`` (its switches are set here); built when None.

    Returns:
        a :class:`ProfileResult`.
    """
    if mode not in MODES:
        raise ModelConfigError(f"profile_vrt: unknown mode {mode!r}; expected one of {MODES}")
    if precision not in PRECISIONS:
        raise ModelConfigError(f"profile_vrt: unknown precision {precision!r}; expected one of {PRECISIONS}")
    if iters < 1 or warmup < 0:
        raise ModelConfigError(f"profile_vrt: iters={iters}, warmup={warmup}; expected iters >= 1, warmup >= 0")
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        raise ModelConfigError(f"profile_vrt: needs a CUDA device, got {device!r} (available: "
                               f"{torch.cuda.is_available()})")
    model = model if model is not None else _build(config, dev, seed)
    inputs = _inputs(config, shape, spike_scale, dev, seed)
    _set_switches(model, attention, checkpoint, compile, deform_backend)
    model.train(mode == "train")
    target = torch.rand(shape, device=dev, generator=torch.Generator(device=dev).manual_seed(seed + 1))

    def body() -> None:
        if mode == "train":
            with precision_context(precision, dev):
                out = model(*inputs)
                loss = (out.float() - target).abs().mean()
            loss.backward()
        else:
            with torch.inference_mode(), precision_context(precision, dev):
                model(*inputs)

    def eager_step() -> None:
        model.zero_grad(set_to_none=True)
        body()

    step = eager_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        if graph:
            side = torch.cuda.Stream(dev)  # warm-up before capture must run on a side stream
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(max(warmup, 1)):
                    eager_step()
            torch.cuda.current_stream(dev).wait_stream(side)
            model.zero_grad(set_to_none=True)
            cuda_graph = torch.cuda.CUDAGraph()
            torch.cuda.reset_peak_memory_stats(dev)
            with torch.cuda.graph(cuda_graph):
                body()
            capture_peak = torch.cuda.max_memory_allocated(dev) / 2**30  # replays reuse these buffers
            step = cuda_graph.replay
            step()
        else:
            step()
        torch.cuda.synchronize(dev)
        first = time.perf_counter() - t0
        for _ in range(0 if graph else max(warmup - 1, 0)):
            step()
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        times = cuda_event_ms(step, iters, dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30
        if graph:
            peak = max(peak, capture_peak)
            del cuda_graph
    model.zero_grad(set_to_none=True)
    return ProfileResult(
        mode=mode, shape=tuple(shape), precision=precision, attention=attention, checkpoint=checkpoint,
        compile=compile, graph=graph, deform_backend=deform_backend, median_ms=statistics.median(times),
        min_ms=min(times), max_ms=max(times), peak_gib=peak, iters=iters, first_call_s=first,
    )


def profile_model_stages(
    config: VRTConfig | VRTSpikeConfig,
    *,
    shape: tuple[int, int, int, int, int],
    spike_scale: float = 1.0,
    mode: str = "train",
    precision: str = "fp32",
    attention: str = "fused",
    checkpoint: str = "none",
    compile: str = "none",
    deform_backend: str = "auto",
    iters: int = 3,
    warmup: int = 1,
    device: str = "cuda",
    seed: int = 0,
) -> StageProfile:
    """Per-part time (and on CUDA, memory) of one configuration (:func:`svrt_model.stage_profile.profile_stages`).

    Args: as :func:`profile_vrt` (no CUDA graph: the parts are timed by hooks between modules), with
        ``device`` ``"cpu"`` or a CUDA device.
    """
    if mode not in MODES:
        raise ModelConfigError(f"profile_model_stages: unknown mode {mode!r}; expected one of {MODES}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError(f"profile_model_stages: device {device!r} asked for, but CUDA is not available; "
                               "use --device cpu")
    model, inputs = _build(config, dev, seed), _inputs(config, shape, spike_scale, dev, seed)
    _set_switches(model, attention, checkpoint, compile, deform_backend)
    b, t, _, h, w = shape
    spikes = f", spikes K={inputs[1].shape[2]} {inputs[1].shape[3]}x{inputs[1].shape[4]}" if len(inputs) > 1 else ""
    what = (f"{type(model).__name__} {mode} {b}x{t}x3x{h}x{w}{spikes} {precision}, attention={attention}, "
            f"checkpoint={checkpoint}, compile={compile}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        return profile_stages(model, inputs, mode=mode, precision=precision, iters=iters, warmup=warmup,
                              description=what)
