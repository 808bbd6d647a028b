"""The training loop end to end on a micro config (CPU, deterministic): the run directory, exact resume after
SIGKILL, refused resumes, the frozen warm-up, EMA weights, the non-finite guard, and DDP == one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svrt_model.errors import CheckpointError, RunConfigError, TrainingError
from svrt_model.train import load_model, load_run_config, read_checkpoint, train
from svrt_model.train.loop import build_model
from svrt_model.train.task import DeblurTask
from tests.conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore::svrt_model.errors.UntrainedSpyNetWarning")


def _params(path: Path, key: str = "model") -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[key]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.model", "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_run_directory_contents(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    cfg = load_run_config(micro_config, ["train.ema_decay=0.5", "log.image_every=2"])
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    result = train(cfg, store=train_store, run_dir=tmp_path / "run")
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before  # restored
    run = tmp_path / "run"
    assert result.steps == 4 and result.best_psnr is None and result.skipped == 0
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "images", "last.pt", "metrics.jsonl"]
    blob = torch.load(run / "last.pt", weights_only=True)
    assert blob["step"] == 4 and blob["consumed"] == 4 and len(blob["rng"]) == 1
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "config", "metrics"} <= set(blob)
    _assert_same(blob["model"], _params(run / "best.pt"))  # no validation: best = last
    recorded = load_run_config(run / "config.yaml")
    assert recorded.data.spike_mean is not None and len(recorded.data.spike_mean) == 8  # per-bin statistics
    assert recorded == load_run_config(micro_config, ["train.ema_decay=0.5", "log.image_every=2"]).replace(
        "data", spike_mean=recorded.data.spike_mean, spike_std=recorded.data.spike_std)
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and all(r["kind"] == "train" for r in lines)
    assert all(np.isfinite(r["loss"]) and 0 <= r["data_wait"] <= 1 and r["clips_per_s"] > 0 for r in lines)
    assert lines[0]["lr"] == pytest.approx(1e-3)  # warm-up of 1 step, then the cosine
    grid = np.asarray(Image.open(run / "images" / "step_0000002.png"))
    assert grid.shape == (64, 256, 3) and sorted(p.name for p in (run / "images").iterdir()) == [
        "step_0000002.png", "step_0000004.png"]
    ema_model, cfg2 = load_model(run / "last.pt")
    raw_model, _ = load_model(run / "last.pt", use_ema=False)
    assert cfg2 == recorded
    _assert_same(ema_model.state_dict(), blob["ema"])
    _assert_same(raw_model.state_dict(), blob["model"])
    assert not all(torch.equal(v, blob["ema"][k]) for k, v in blob["model"].items())
    init = build_model(cfg, torch.device("cpu")).state_dict()
    assert not torch.equal(init["vrt.conv_first.weight"], blob["model"]["vrt.conv_first.weight"])


def test_resume_after_sigkill_equals_uninterrupted(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    overrides = ["train.steps=6", "train.ema_decay=0.9"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(str(micro_config), "--store", str(train_store), "--out", str(killed), *overrides),
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    stopped_at = read_checkpoint(killed / "last.pt")["step"]
    assert stopped_at < 6, "the run finished before it was killed: the test proved nothing"
    cfg = load_run_config(micro_config, overrides)
    resumed = train(cfg, store=train_store, run_dir=killed, resume=True)
    straight = train(cfg, store=train_store, run_dir=tmp_path / "straight")
    assert resumed.steps == straight.steps == 6
    for key in ("model", "ema"):
        _assert_same(_params(killed / "last.pt", key), _params(tmp_path / "straight" / "last.pt", key))
    steps = [json.loads(s)["step"] for s in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # lines of the steps trained again were dropped, not duplicated


def test_resume_refuses_another_config_and_extends_steps(train_store: Path, micro_config: Path,
                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_run_config(micro_config, ["train.steps=2"]), store=train_store, run_dir=run)
    with pytest.raises(TrainingError, match="already holds a run .*pass --resume"):
        train(load_run_config(micro_config, ["train.steps=2"]), store=train_store, run_dir=run)
    other = load_run_config(micro_config, ["train.steps=2", "train.lr=5.0e-4", "data.seed=3"])
    differ = r"(?s)these keys differ.*data\.seed: 0 -> 3.*train\.lr: 0\.001 -> 0\.0005"
    with pytest.raises(CheckpointError, match=differ):
        train(other, store=train_store, run_dir=run, resume=True)
    longer = train(load_run_config(micro_config, ["train.steps=3", "log.every=2"]), store=train_store, run_dir=run,
                   resume=True)
    assert longer.steps == 3 and read_checkpoint(run / "last.pt")["step"] == 3


def test_frozen_warmup_keeps_spynet_then_trains_it(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    overrides = ["train.fix_iter=2", "train.fix_keys=[spynet]", "train.fix_lr_mul=0.5", "train.steps=2"]
    cfg = load_run_config(micro_config, overrides)
    init = build_model(cfg, torch.device("cpu")).state_dict()
    train(cfg, store=train_store, run_dir=tmp_path / "run")
    frozen = _params(tmp_path / "run" / "last.pt")
    spy = [k for k in init if ".spynet." in k and init[k].is_floating_point()]
    assert spy and all(torch.equal(init[k], frozen[k]) for k in spy)
    assert not torch.equal(init["vrt.conv_first.weight"], frozen["vrt.conv_first.weight"])
    train(load_run_config(micro_config, [*overrides[:-1], "train.steps=3"]), store=train_store,
          run_dir=tmp_path / "run", resume=True)
    blob = read_checkpoint(tmp_path / "run" / "last.pt")
    assert any(not torch.equal(frozen[k], blob["model"][k]) for k in spy)
    lrs = [g["lr"] for g in blob["optimizer"]["param_groups"]]
    assert lrs[1] == pytest.approx(0.5 * lrs[0])


def test_nonfinite_steps_are_skipped_then_stop_the_run(train_store: Path, micro_config: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    forward = DeblurTask.forward

    def poisoned(self: DeblurTask, batch: dict) -> dict:
        out = forward(self, batch)
        return {**out, "loss": out["loss"] * float("nan")}

    monkeypatch.setattr(DeblurTask, "forward", poisoned)
    cfg = load_run_config(micro_config, ["train.max_nonfinite=2"])
    with pytest.raises(TrainingError, match=r"step 1: 2 consecutive steps with a non-finite loss"):
        train(cfg, store=train_store, run_dir=tmp_path / "run")
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["skipped"] == 1 and lines[0]["loss"] is None


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    """2 ranks x batch 1 (torchrun, gloo) == 1 process x batch 2: the same global batches (4 clips per epoch,
    so no padding), gradients averaged across ranks; float64 makes the comparison exact up to summation order."""
    common = ["train.steps=2", "train.precision=fp64", "train.checkpoint_every=2"]
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cli.model",
           "train", str(micro_config), "--store", str(train_store), "--out", str(ddp), "data.batch_size=1", *common]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    single = train(load_run_config(micro_config, ["data.batch_size=2", *common]), store=train_store,
                   run_dir=tmp_path / "single")
    a, b = read_checkpoint(ddp / "last.pt"), read_checkpoint(single.last)
    assert a["step"] == b["step"] == 2 and len(a["rng"]) == 2
    assert a["consumed"] * 2 == b["consumed"] == 4
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=0, atol=1e-10, msg=k)
    # AdamW is blind to a constant gradient scale, so also compare the gradient norms (averaged, not summed)
    norms = [[json.loads(s)["grad_norm"] for s in (d / "metrics.jsonl").read_text().splitlines()]
             for d in (ddp, tmp_path / "single")]
    assert norms[0] == pytest.approx(norms[1], rel=1e-9) and len(norms[0]) == 2


def test_validation_keeps_the_best_checkpoint(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    cfg = load_run_config(micro_config, ["log.val_split=test", "log.val_every=2", "train.steps=4",
                                         "train.checkpoint_every=4"])
    result = train(cfg, store=train_store, run_dir=tmp_path / "run")
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in lines if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [2, 4]
    assert set(vals[0]) == {"kind", "step", "psnr_input", "psnr_output", "ssim_input", "ssim_output"}
    assert vals[0]["psnr_input"] == vals[1]["psnr_input"] and 0 < vals[0]["ssim_input"] <= 1
    best = max(vals, key=lambda r: r["psnr_output"])
    assert result.best_psnr == best["psnr_output"]
    blob = read_checkpoint(tmp_path / "run" / "best.pt")
    assert blob["step"] == best["step"] and blob["metrics"]["best_psnr"] == best["psnr_output"]
    assert read_checkpoint(tmp_path / "run" / "last.pt")["metrics"]["last_val"]["psnr_output"] == vals[1]["psnr_output"]


def test_validation_on_another_store(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    """``log.val_store``: the validation split comes from another store (other scenes), checked at start."""
    from pipelines.voxelize_job import voxelize_dataset
    from svrt_errors import StoreError
    from tests.store_helpers import make_raw

    raw = make_raw(tmp_path / "raw", sequences=1, test_sequences=1, frames=3, seed=7)
    other = tmp_path / "other.zarr"
    voxelize_dataset(raw, raw / "align.csv", other, bins=8, backend="numpy", progress=False)
    over = ["log.val_split=test", "train.steps=2", "train.checkpoint_every=2"]
    scores = {}
    for name, store in (("own", None), ("other", other)):
        extra = [] if store is None else [f"log.val_store={store}"]
        train(load_run_config(micro_config, [*over, *extra]), store=train_store, run_dir=tmp_path / name)
        lines = [json.loads(s) for s in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        scores[name] = [r["psnr_input"] for r in lines if r["kind"] == "val"]
    assert len(scores["own"]) == len(scores["other"]) == 1 and scores["own"] != scores["other"]  # other frames
    with pytest.raises(StoreError, match="no split 'val'"):
        train(load_run_config(micro_config, [*over, "log.val_split=val", f"log.val_store={other}"]),
              store=train_store, run_dir=tmp_path / "missing")
    assert not (tmp_path / "missing" / "config.yaml").exists()  # refused before anything is written


def test_raw_bits_train_the_accumulator_end_to_end(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    """``model.spike_input=raw``: the loader's packed bits reach the model's learnable accumulator (its decays
    get gradients and move), the grid shows the bins' counts, and the checkpoint evaluates on the store."""
    from svrt_model.inference import evaluate_checkpoint
    from svrt_model.restore import Tile

    over = ["model.spike_input=raw", "model.raw_init_gamma=0.9", "data.spike_input=raw", "log.image_every=2"]
    cfg = load_run_config(micro_config, over)
    init = build_model(cfg, torch.device("cpu")).state_dict()
    result = train(cfg, store=train_store, run_dir=tmp_path / "run")
    trained = _params(result.last)
    gamma = [k for k in trained if "raw_gamma" in k]
    assert gamma and not torch.equal(trained[gamma[0]], init[gamma[0]])  # the decays learn
    recorded = load_run_config(tmp_path / "run" / "config.yaml")
    assert recorded.data.spike_mean is None  # nothing to normalise: the accumulator's output feeds the encoder
    grid = np.asarray(Image.open(tmp_path / "run" / "images" / "step_0000002.png"))
    assert grid.shape == (64, 256, 3) and grid[:, 64:128].max() > 0  # the spike-count panel is not empty
    report = evaluate_checkpoint(result.last, train_store, "test", tile=Tile.clip(2), device="cpu", progress=False)
    assert np.isfinite(report.to_json()["overall"]["psnr_output"])


def test_interval_voxels_train_and_evaluate_end_to_end(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    """``model.spike_input=intervals``: the loader's packed bits reach the model as interval voxels, the
    spike encoder learns from them, and the checkpoint evaluates on the store through the same input."""
    from svrt_model.inference import evaluate_checkpoint
    from svrt_model.restore import Tile
    from svrt_model.spike.inputs import IntervalSpikeInput

    over = ["model.spike_input=intervals", "model.interval_spikes=1", "data.spike_input=raw"]
    cfg = load_run_config(micro_config, over)
    init = build_model(cfg, torch.device("cpu")).state_dict()
    result = train(cfg, store=train_store, run_dir=tmp_path / "run")
    trained = _params(result.last)
    encoder = [k for k in trained if k.startswith("spike_encoder.") and k.endswith("weight")]
    assert encoder and not torch.equal(trained[encoder[0]], init[encoder[0]])  # the encoder learns
    recorded = load_run_config(tmp_path / "run" / "config.yaml")
    assert recorded.data.spike_mean is None and recorded.model.config.interval_spikes == 1
    model, _ = load_model(result.last)
    assert isinstance(model.spike_input, IntervalSpikeInput) and model.spike_input.spikes_each_side == 1
    report = evaluate_checkpoint(result.last, train_store, "test", tile=Tile.clip(2), device="cpu", progress=False)
    assert np.isfinite(report.to_json()["overall"]["psnr_output"])


class _EagerGraph:
    """A stand-in for ``torch.cuda.CUDAGraph`` on the CPU: the "capture" runs the pass once; a replay runs it
    again and writes its results where a real replay writes them: into the tensors the capture produced
    (outputs, and the gradient buffers the capture left in ``.grad``), never rebinding ``.grad``. It checks
    the loop's side of ``train.cuda_graph``: the eager parts around the replay, the kept gradient buffers,
    the recapture after the frozen warm-up."""

    step = None

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] | None = None

    def replay(self) -> None:
        step = _EagerGraph.step
        params = list(step.model.parameters())
        if self.buffers is None:  # the first replay follows the capture: .grad still holds its buffers
            self.buffers = {id(p): p.grad for p in params if p.grad is not None}
        kept = [p.grad for p in params]
        for p in params:
            p.grad = None
        out = step._pass(step._static)
        for p, g in zip(params, kept, strict=True):
            if id(p) in self.buffers and p.grad is not None:
                self.buffers[id(p)].copy_(p.grad)
            p.grad = g
        step._out["loss"].copy_(out["loss"])
        step._out["output"].copy_(out["output"])
        for k, v in out["terms"].items():
            step._out["terms"][k].copy_(v)


def test_cuda_graph_loop_emulated_on_the_cpu_equals_eager(train_store: Path, micro_config: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from svrt_model.train import loop
    from svrt_model.train.graphed import GraphedStep

    class _Stream:
        def wait_stream(self, other) -> None:
            pass

    def graphed_step(run):  # the real one refuses the CPU
        if not run.cfg.train.cuda_graph:
            return None
        step = GraphedStep(transform=run.task.transform, score=run.task.score, model=run.model, device=run.device,
                           dtype=None)
        _EagerGraph.step = step
        return step

    for name, value in {"Stream": _Stream, "current_stream": _Stream, "CUDAGraph": _EagerGraph,
                        "stream": lambda s: contextlib.nullcontext(), "synchronize": lambda: None,
                        "graph": lambda g, **kw: contextlib.nullcontext()}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(loop._Run, "_graphed_step", graphed_step)
    common = ["train.fix_iter=2", "train.fix_keys=[spynet]", "train.device=auto"]
    eager = train(load_run_config(micro_config, common), store=train_store, run_dir=tmp_path / "eager")
    graph = train(load_run_config(micro_config, [*common, "train.cuda_graph=true"]), store=train_store,
                  run_dir=tmp_path / "graph")
    records = [json.loads(s) for s in (tmp_path / "graph" / "metrics.jsonl").read_text().splitlines()]
    assert (records[-1]["graph_replays"], records[-1]["graph_captures"]) == (4, 2)  # frozen SpyNet, then all
    _assert_same(_params(graph.last), _params(eager.last))  # warm-up passes and kept buffers change nothing
    assert graph.loss == eager.loss


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusal")
def test_cuda_graph_without_a_gpu_is_refused_at_start(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    cfg = load_run_config(micro_config, ["train.device=auto", "train.cuda_graph=true"])
    with pytest.raises(TrainingError, match=r"train\.cuda_graph needs a CUDA device; this run trains on cpu .*"
                                            r"set train\.cuda_graph=false"):
        train(cfg, store=train_store, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()
    cfg = load_run_config(micro_config, ["train.device=auto", "train.attention=flex"])
    with pytest.raises(TrainingError, match=r"train\.attention=flex trains on a GPU only .* train\.attention=fused"):
        train(cfg, store=train_store, run_dir=tmp_path / "flex")
    assert not (tmp_path / "flex" / "last.pt").exists()


@pytest.mark.parametrize("kind", ["raw", "intervals"])
def test_bit_models_need_raw_data(micro_config: Path, kind: str) -> None:
    with pytest.raises(RunConfigError,
                       match=f"model.spike_input='{kind}' reads packed bits, .* set data.spike_input=raw"):
        load_run_config(micro_config, [f"model.spike_input={kind}"])
