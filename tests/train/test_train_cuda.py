"""``train.cuda_graph`` on the GPU: steps replayed from a CUDA graph train as eager steps do (the same
kernels; the deformable convolution's atomics make both reproducible only to rounding), the frozen
warm-up's end makes one new capture, and the raw-bits input path replays too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from svrt_model.train import load_run_config, read_checkpoint, train

pytestmark = [pytest.mark.needs_cuda, pytest.mark.filterwarnings("ignore::svrt_model.errors.UntrainedSpyNetWarning")]

GPU = ["train.device=cuda", "train.deterministic=false", "train.steps=6", "train.fix_iter=2", "train.fix_keys=[spynet]"]


def _records(run: Path) -> list[dict]:
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_steps_train_like_eager_steps(train_store: Path, micro_config: Path, tmp_path: Path,
                                            precision: str) -> None:
    common = [*GPU, f"train.precision={precision}"]
    eager = train(load_run_config(micro_config, common), store=train_store, run_dir=tmp_path / "eager")
    graph = train(load_run_config(micro_config, [*common, "train.cuda_graph=true"]), store=train_store,
                  run_dir=tmp_path / "graph")
    last = _records(tmp_path / "graph")[-1]
    assert last["graph_replays"] == 6 and last["graph_captures"] == 2  # frozen SpyNet, then all parameters
    losses = [r["loss"] for r in _records(tmp_path / "graph")], [r["loss"] for r in _records(tmp_path / "eager")]
    tol = 1e-4 if precision == "fp32" else 1e-2
    assert losses[0] == pytest.approx(losses[1], rel=tol)
    a, b = read_checkpoint(graph.last)["model"], read_checkpoint(eager.last)["model"]
    worst = max((_rel(a[k], b[k]), k) for k in b if b[k].is_floating_point() and b[k].norm() > 0)
    assert worst[0] <= 10 * tol, worst


def test_raw_bits_replay(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    over = [*GPU, "model.spike_input=raw", "data.spike_input=raw", "train.cuda_graph=true", "train.precision=bf16"]
    train(load_run_config(micro_config, over), store=train_store, run_dir=tmp_path / "run")
    records = _records(tmp_path / "run")
    assert records[-1]["graph_replays"] >= 4 and all(r["loss"] == r["loss"] for r in records)  # replayed, finite
