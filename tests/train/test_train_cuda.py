"""``train.cuda_graph`` on the GPU: steps replayed from a CUDA graph train as eager steps do (the same
kernels; the deformable convolution's atomics make both reproducible only to rounding), the frozen
warm-up's end makes one new capture, and the raw-bits input paths (accumulated, intervals, the spike
luminance base, the refined base with encoder rate channels or with its bin readings) replay too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svrt_model.train import load_run_config, read_checkpoint, train

pytestmark = [pytest.mark.needs_cuda, pytest.mark.filterwarnings("ignore::svrt_model.errors.UntrainedSpyNetWarning")]

GPU = ["train.device=cuda", "train.deterministic=false", "train.steps=6", "train.fix_iter=2", "train.fix_keys=[spynet]"]


def _records(run: Path) -> list[dict]:
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "train"]


def _distance(a: Path, b: Path) -> float:
    """Relative distance of two runs' final parameters, all floating tensors taken as one vector."""
    x, y = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    keys = [k for k in y if y[k].is_floating_point()]
    diff = sum(float((x[k].double() - y[k].double()).square().sum()) for k in keys)
    return (diff / sum(float(y[k].double().square().sum()) for k in keys)) ** 0.5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_steps_train_like_eager_steps(train_store: Path, micro_config: Path, tmp_path: Path,
                                            precision: str) -> None:
    # Two eager runs measure the noise floor: the deformable convolution's and grid_sample's atomics make
    # eager runs differ in rounding, and six steps of AdamW amplify it (a zero-initialised offset head's
    # update is the sign of a gradient that is rounding noise). The graph run must stay within that floor.
    common = [*GPU, f"train.precision={precision}"]
    eager = [train(load_run_config(micro_config, common), store=train_store, run_dir=tmp_path / f"eager{i}")
             for i in range(2)]
    graph = train(load_run_config(micro_config, [*common, "train.cuda_graph=true"]), store=train_store,
                  run_dir=tmp_path / "graph")
    last = _records(tmp_path / "graph")[-1]
    assert last["graph_replays"] == 6 and last["graph_captures"] == 2  # frozen SpyNet, then all parameters
    first = [_records(tmp_path / name)[0]["loss"] for name in ("graph", "eager0")]
    assert first[0] == pytest.approx(first[1], rel=1e-5 if precision == "fp32" else 1e-3)  # same start
    floor = _distance(eager[1].last, eager[0].last)
    assert _distance(graph.last, eager[0].last) <= 3 * floor + 1e-6, floor


@pytest.mark.parametrize("kind", ["raw", "intervals", "raw+base", "raw+refined+rates", "raw+refined+bins",
                                  "raw+refined+input", "raw+refined+colorline"])
def test_raw_bits_replay(train_store: Path, micro_config: Path, tmp_path: Path, kind: str) -> None:
    spike_input, *extras = kind.split("+")
    over = [*GPU, f"model.spike_input={spike_input}", "data.spike_input=raw", "train.cuda_graph=true",
            "train.precision=bf16", *(["model.spike_base=intervals"] if "base" in extras else []),
            *(["model.spike_base=refined"] if "refined" in extras else []),
            *(["model.centre_rates=[1, 3]"] if "rates" in extras else []),
            *(["model.refine_bins=true"] if "bins" in extras else []),
            *(["model.base_into=input"] if "input" in extras else []),
            *(["model.base_chroma=colorline"] if "colorline" in extras else [])]
    train(load_run_config(micro_config, over), store=train_store, run_dir=tmp_path / "run")
    records = _records(tmp_path / "run")
    assert records[-1]["graph_replays"] >= 4 and all(r["loss"] == r["loss"] for r in records)  # replayed, finite
