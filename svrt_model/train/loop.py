"""``train(config, store=, run_dir=)``: the training run behind ``svrt-model train``.

One optimizer step = ``train.accumulate`` micro-batches of ``data.batch_size`` clips per process (global
batch ``batch_size x accumulate x world_size``): each is moved to the device, run through the
:class:`~svrt_model.train.task.DeblurTask` under autocast, and backpropagated (gradients synchronised
across ranks on the last micro-batch only; parameters frozen for the warm-up take no part); then
gradients are unscaled (fp16), measured and clipped, and the step is taken unless the loss or the
gradient norm is not finite on any rank (:class:`~svrt_model.train.optim.NonFiniteGuard`); the schedule
advances either way, the EMA after a taken step.

Rank 0 logs (:class:`~svrt_model.train.logger.RunLogger`), validates on ``log.val_split`` (of ``log.val_store``; full
sequences, :func:`svrt_model.restore.evaluate_split`) and writes checkpoints; every rank contributes its
RNG state to them. Resuming (``resume=True``) reloads ``RUN_DIR/last.pt`` and continues with the clip the
interrupted run would have drawn next: with ``train.deterministic`` on the CPU the result equals an
uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from kernels.spike_accumulate import spike_accumulate
from svrt_data import SpikeDeblurDataset
from svrt_data.loader.collate import move_batch
from svrt_model import VRTSpike
from svrt_model.errors import CheckpointError, TrainingError
from svrt_model.losses import DeblurLoss
from svrt_model.restore import Tile, evaluate_split
from svrt_model.train.checkpoint import (
    FORMAT,
    VERSION,
    atomic_save,
    atomic_write_text,
    config_differences,
    get_rng_state,
    read_checkpoint,
    set_rng_state,
)
from svrt_model.train.config import RunConfig
from svrt_model.train.data import build_dataset, build_loader, build_transform, resolve_spike_stats
from svrt_model.train.distributed import DistContext, resolve_device
from svrt_model.train.graphed import GraphedStep
from svrt_model.train.logger import RunLogger
from svrt_model.train.optim import ModelEMA, NonFiniteGuard, build_optimizer, build_scheduler, set_frozen
from svrt_model.train.task import DeblurTask

__all__ = ["TrainResult", "build_model", "train", "validation_tile"]

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainResult:
    """What a finished run left: its directory, steps, checkpoints, best validation PSNR, skipped steps."""

    run_dir: Path
    steps: int
    last: Path
    best: Path
    best_psnr: float | None
    skipped: int
    loss: float | None


def build_model(cfg: RunConfig, device: torch.device) -> VRTSpike:
    """The model of ``cfg`` (initialised from ``train.seed``) with the run-time switches of ``train``."""
    if cfg.train.attention == "flex" and device.type != "cuda":
        raise TrainingError(f"train.attention=flex trains on a GPU only (FlexAttention has no backward on "
                            f"{device.type}); set train.attention=fused")
    torch.manual_seed(cfg.train.seed)
    model = VRTSpike(cfg.model.config)
    if cfg.train.init == "identity":  # output = input + conv_last(...): zero it and the model starts as the identity
        torch.nn.init.zeros_(model.vrt.conv_last.weight)
        torch.nn.init.zeros_(model.vrt.conv_last.bias)
    model.set_grad_checkpointing(cfg.train.grad_checkpoint)
    model.set_spike_checkpointing(cfg.train.spike_checkpoint)
    model.set_attention(cfg.train.attention)
    if cfg.train.compile != "none":
        model.compile_blocks(cfg.train.compile)
    if cfg.train.precision == "fp64":
        model = model.double()
    return model.to(device)


def shown_counts(x: dict[str, Any], raw: dict[str, Any]) -> torch.Tensor:
    """The spike counts a PNG grid shows, ``(B, T, K, Hs, Ws)``: the stored voxels, the transformed ones, or for
    packed bits (``spike_input='raw'``) the count voxels of the first clip's bins (gamma = 1)."""
    if "spike_bin_ranges" in x:
        bits, ranges = x["spike_bits"][:1], x["spike_bin_ranges"][:1]
        ones = torch.ones(ranges.shape[2], device=bits.device)
        return spike_accumulate(bits, ranges, ones, backend="torch")
    return raw["spikes"] if raw["spikes"].dtype == torch.uint8 else x["spikes"]


def validation_tile(cfg: RunConfig) -> Tile | None:
    """The tiling of ``log.val_tile``; ``clip``: clips of ``data.clip_len`` frames overlapping by one, whole frames."""
    if cfg.log.val_tile == "clip":
        return Tile.clip(cfg.data.clip_len)
    return Tile.parse(cfg.log.val_tile)


class _Run:
    """The state of one run and the steps of its loop (kept small: each method is one phase)."""

    def __init__(self, cfg: RunConfig, store: str | os.PathLike, run_dir: Path, ctx: DistContext,
                 resume: bool) -> None:
        self.store, self.run_dir, self.ctx = store, run_dir, ctx
        blob = self._checkpoint_to_resume(cfg, resume)
        if blob is not None and cfg.data.normalize and cfg.data.spike_mean is None:
            saved = RunConfig.from_dict(blob["config"], source=f"checkpoint {run_dir / 'last.pt'}")
            cfg = cfg.replace("data", spike_mean=saved.data.spike_mean, spike_std=saved.data.spike_std)
        self.dataset = build_dataset(cfg, store)
        cfg = resolve_spike_stats(cfg, store)
        if blob is not None:
            diffs = config_differences(blob["config"], cfg)
            if diffs:
                raise CheckpointError(
                    f"{run_dir / 'last.pt'} was trained with another config; these keys differ (saved -> now):\n  "
                    + "\n  ".join(diffs)
                    + "\nResume with the run's config (RUN_DIR/config.yaml; train.steps and log.* may change) "
                    "or start a new run in another --out"
                )
        self.val_store = cfg.log.val_store if cfg.log.val_store is not None else store
        if cfg.log.val_split is not None:  # fail at start, not after hours, when the split is missing
            SpikeDeblurDataset(self.val_store, cfg.log.val_split, clip_len=cfg.data.clip_len, mode="eval",
                               sharp=True)
        self.cfg = cfg
        t = cfg.train
        self.device = ctx.device
        self.model = build_model(cfg, self.device)
        loss = DeblurLoss(charbonnier_weight=cfg.loss.charbonnier, delta=cfg.loss.charbonnier_delta,
                          vgg_weight=cfg.loss.vgg, vgg_weights=cfg.loss.vgg_weights, vgg_layers=cfg.loss.vgg_layers)
        self.task = DeblurTask(model=self.model, loss=loss, transform=build_transform(cfg)).to(self.device)
        self.optimizer = build_optimizer(self.model, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas,
                                         fix_keys=t.fix_keys if t.fix_iter or t.fix_lr_mul != 1 else (),
                                         fix_lr_mul=t.fix_lr_mul)
        self.scheduler = build_scheduler(self.optimizer, steps=t.steps, warmup_steps=t.warmup_steps,
                                         schedule=t.schedule, lr=t.lr, min_lr=t.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        self.ema = ModelEMA(self.model, decay=t.ema_decay) if t.ema_decay else None
        self.guard = NonFiniteGuard(limit=t.max_nonfinite)
        self.step, self.consumed, self.best_psnr, self.last_val = 0, 0, None, None
        torch.manual_seed(t.seed + 1 + ctx.rank)  # dropout / drop-path draws differ per rank
        if blob is not None:
            self._restore(blob)
        self._first_step = self.step
        self.runner = self.task
        self.graphed = self._graphed_step()
        if ctx.distributed:
            ids = [self.device] if self.device.type == "cuda" else None
            self.runner = DistributedDataParallel(self.task, device_ids=ids, broadcast_buffers=False,
                                                  find_unused_parameters=self.step < t.fix_iter)
        self.loader = build_loader(cfg, self.dataset, start=self.consumed, rank=ctx.rank, world_size=ctx.world_size,
                                   pin_memory=self.device.type == "cuda")

    def _graphed_step(self) -> GraphedStep | None:
        t = self.cfg.train
        if not t.cuda_graph:
            return None
        if self.device.type != "cuda":
            raise TrainingError(f"train.cuda_graph needs a CUDA device; this run trains on {self.device} "
                                "(no usable GPU for train.device=auto?); set train.cuda_graph=false")
        if self.ctx.distributed:
            raise TrainingError("train.cuda_graph runs in a single process for now; under torchrun set "
                                "train.cuda_graph=false")
        return GraphedStep(transform=self.task.transform, score=self.task.score, model=self.model,
                           device=self.device, dtype=_AUTOCAST.get(t.precision))

    # -- checkpoints ----------------------------------------------------------------------------------
    def _checkpoint_to_resume(self, cfg: RunConfig, resume: bool) -> dict[str, Any] | None:
        last = self.run_dir / "last.pt"
        if not last.exists():
            return None
        if not resume:
            raise TrainingError(
                f"{self.run_dir} already holds a run ({last}); pass --resume to continue it, or choose a new --out"
            )
        return read_checkpoint(last)

    def _restore(self, blob: dict[str, Any]) -> None:
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        if self.scaler is not None and blob.get("scaler") is not None:
            self.scaler.load_state_dict(blob["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(blob["ema"])
        self.guard.load_state_dict(blob["guard"])
        self.step, self.consumed = int(blob["step"]), int(blob["consumed"])
        self.best_psnr, self.last_val = blob["metrics"].get("best_psnr"), blob["metrics"].get("last_val")
        rng = blob["rng"]
        set_rng_state(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0])

    def state(self) -> dict[str, Any]:
        """The checkpoint dict (collective: every rank must call it, for the RNG states)."""
        rng = self.ctx.gather(get_rng_state())
        return {
            "format": FORMAT, "version": VERSION, "step": self.step, "consumed": self.consumed,
            "config": self.cfg.to_dict(), "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "guard": self.guard.state_dict(), "rng": rng,
            "metrics": {"best_psnr": self.best_psnr, "last_val": self.last_val},
        }

    # -- one optimizer step ---------------------------------------------------------------------------
    def optimizer_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        t, wait = self.cfg.train, 0.0
        if self.step in (0, self._first_step, t.fix_iter):
            set_frozen(self.optimizer, self.step < t.fix_iter)
        autocast = (torch.autocast(self.device.type, dtype=_AUTOCAST[t.precision]) if t.precision in _AUTOCAST
                    else contextlib.nullcontext())
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        result: dict[str, Any] = {}
        for micro in range(t.accumulate):
            start = time.perf_counter()
            raw = move_batch(next(batches), self.device)
            wait += time.perf_counter() - start
            last = micro == t.accumulate - 1
            graphed = self.graphed(raw, key=self.step < t.fix_iter) if self.graphed is not None else None
            if graphed is not None:  # forward, loss and backward replayed (accumulate is 1, no scaler)
                result = graphed
            else:
                sync = contextlib.nullcontext() if last or not self.ctx.distributed else self.runner.no_sync()
                with sync:
                    with autocast:
                        result = self.runner(raw)
                    loss = result["loss"] / t.accumulate
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += result["loss"].detach().double()
            self.consumed += self.cfg.data.batch_size
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if t.grad_clip is not None and grads:
            torch.nn.utils.clip_grads_with_norm_(grads, t.grad_clip, norm)
        loss_value = float(loss_sum) / t.accumulate
        finite = self.ctx.all_true(math.isfinite(loss_value) and math.isfinite(float(norm)))
        if self.guard.check(self.step, finite):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        if self.scaler is not None:
            self.scaler.update()
        # a graph's replays write the gradients into the buffers it captured: keep them (zeroed, for a step
        # that runs eagerly instead)
        self.optimizer.zero_grad(set_to_none=self.graphed is None)
        self.scheduler.step()
        self.step += 1
        return {"loss": loss_value, "grad_norm": float(norm), "finite": finite, "wait": wait, "raw": raw,
                "result": result}

    # -- validation -----------------------------------------------------------------------------------
    def validate(self) -> dict[str, float] | None:
        """Rank 0: PSNR/SSIM of the EMA (or trained) weights on ``log.val_split``; the others wait."""
        if self.cfg.log.val_split is None:
            return None
        report = None
        if self.ctx.is_main:
            model = self.model
            if self.ema is not None:
                model = copy.deepcopy(self.model)
                model.load_state_dict(self.ema.state_dict())
            was_training = self.model.training
            model.eval()
            precision = self.cfg.train.precision if self.cfg.train.precision in ("bf16", "fp16") else "fp32"
            with torch.no_grad():
                rep = evaluate_split(model, self.val_store, self.cfg.log.val_split, tile=validation_tile(self.cfg),
                                     transform=self.task.transform, device=self.device, precision=precision,
                                     progress=False)
            self.model.train(was_training)
            report = {k: float(v) for k, v in rep.to_json()["overall"].items()}
        self.ctx.barrier()
        return report


def train(config: RunConfig, *, store: str | os.PathLike, run_dir: str | os.PathLike, resume: bool = False,
          dist: DistContext | None = None) -> TrainResult:
    """Train ``config`` on ``store`` into ``run_dir`` (module docstring); returns what the run left.

    Args:
        config: the run (:func:`~svrt_model.train.config.load_run_config`).
        store: the Zarr store (``svrt-data voxelize``) with ``data.train_split`` (and ``log.val_split``).
        run_dir: where ``last.pt``, ``best.pt``, ``config.yaml``, ``metrics.jsonl``, ``images/`` go.
        resume: continue the run in ``run_dir`` from ``last.pt`` (a fresh run when there is none yet).
        dist: the process group (:meth:`DistContext.from_env` under torchrun); None: one process.

    Raises:
        TrainingError: ``run_dir`` holds a run and ``resume`` is off; too many non-finite steps.
        CheckpointError: resuming a run whose config differs in keys that change the math or data order.
    """
    ctx = dist or DistContext(device=resolve_device(config.train.device))
    # process-global torch settings, restored when the run ends
    saved = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        if config.train.deterministic:
            if ctx.device.type == "cuda":  # cuBLAS needs it for deterministic GEMMs (read at the first GEMM)
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        return _train(config, store, Path(run_dir), resume, ctx)
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.set_num_threads(saved[1])


def _train(config: RunConfig, store: str | os.PathLike, run_dir: Path, resume: bool, ctx: DistContext) -> TrainResult:
    run = _Run(config, store, run_dir, ctx, resume)
    cfg, t, log = run.cfg, run.cfg.train, run.cfg.log
    if ctx.is_main:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    logger = RunLogger(run_dir, total_steps=t.steps, start_step=run.step, enabled=ctx.is_main,
                       progress=log.progress, tensorboard=log.tensorboard)
    batches = iter(run.loader)
    clips_per_step = cfg.data.batch_size * t.accumulate * ctx.world_size
    window = {"loss": 0.0, "n": 0, "wait": 0.0, "start": time.perf_counter(), "steps": 0}
    last_loss = None
    try:
        while run.step < t.steps:
            out = run.optimizer_step(batches)
            step = run.step
            window["wait"] += out["wait"]
            window["steps"] += 1
            if out["finite"]:
                window["loss"] += out["loss"]
                window["n"] += 1
            if step % log.every == 0 or step == t.steps:
                wall = time.perf_counter() - window["start"]
                last_loss = window["loss"] / window["n"] if window["n"] else float("nan")
                record = {"kind": "train", "step": step, "loss": last_loss,
                          "lr": run.optimizer.param_groups[0]["lr"], "grad_norm": out["grad_norm"],
                          "clips_per_s": window["steps"] * clips_per_step / wall, "data_wait": window["wait"] / wall,
                          "skipped": run.guard.skipped, "epoch": run.consumed // run.loader.sampler.per_epoch}
                if run.graphed is not None:  # steps replayed from a CUDA graph so far, and the captures made
                    record.update(graph_replays=run.graphed.replays, graph_captures=run.graphed.captures)
                logger.write(record)
                logger.advance(window["steps"], loss=f"{last_loss:.4f}", lr=f"{record['lr']:.2e}",
                               clips_s=f"{record['clips_per_s']:.1f}", wait=f"{100 * record['data_wait']:.0f}%")
                window = {"loss": 0.0, "n": 0, "wait": 0.0, "start": time.perf_counter(), "steps": 0}
            if log.image_every and step % log.image_every == 0:
                shown = dict(out["result"]["input"], counts=shown_counts(out["result"]["input"], out["raw"]))
                logger.images(step, shown, out["result"]["output"])
            del out
            improved = False
            if (log.val_every and step % log.val_every == 0) or step == t.steps:
                report = run.validate()
                if report is not None:
                    run.last_val = report
                    logger.write({"kind": "val", "step": step, **report})
                    logger.note(f"step {step}: validation PSNR {report['psnr_output']:.2f} dB "
                                f"(input {report['psnr_input']:.2f} dB)")
                    improved = run.best_psnr is None or report["psnr_output"] > run.best_psnr
                    if improved:
                        run.best_psnr = report["psnr_output"]
                improved = ctx.gather(improved)[0]
            if step % t.checkpoint_every == 0 or step == t.steps or improved:
                state = run.state()
                if ctx.is_main:
                    if step % t.checkpoint_every == 0 or step == t.steps:
                        atomic_save(state, run_dir / "last.pt")
                    if improved or (step == t.steps and run.best_psnr is None):  # no validation: best = last
                        atomic_save(state, run_dir / "best.pt")
                del state
    finally:
        logger.close()
        del batches
    return TrainResult(run_dir=run_dir, steps=run.step, last=run_dir / "last.pt", best=run_dir / "best.pt",
                       best_psnr=run.best_psnr, skipped=run.guard.skipped, loss=last_loss)
