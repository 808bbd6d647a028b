"""Run configuration: presets, ``base`` chains, dotted overrides, resolved round trips and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from svrt_model import svrt_base
from svrt_model.errors import RunConfigError
from svrt_model.train.config import PRESETS, RunConfig, load_run_config, preset_path


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name: str, tmp_path: Path) -> None:
    cfg = load_run_config(name)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    resolved = tmp_path / "config.yaml"
    resolved.write_text(cfg.to_yaml())
    assert load_run_config(resolved) == cfg  # a run's config.yaml reproduces the run's config


def test_preset_contents() -> None:
    base, fast, tiny = load_run_config("svrt-base"), load_run_config("svrt-fast"), load_run_config("tiny")
    assert base.model.config == svrt_base()
    assert (base.data.clip_len, base.data.crop, base.model.config.spike_bins) == (5, 256, 32)
    assert base.model.config.channels_per_scale == (96, 96, 96, 96)
    t = base.train
    assert (t.lr, t.weight_decay, t.schedule, t.accumulate, base.data.batch_size) == (2e-4, 1e-4, "cosine", 6, 1)
    assert t.warmup_steps > 0 and (base.loss.charbonnier, base.loss.vgg) == (1.0, 0.1)
    assert fast.train.precision == "bf16" and fast.model == base.model and fast.data == base.data
    assert (fast.train.attention, fast.train.compile) == ("flex", "attn+ffn+spike")  # measured: RESULTS, issue 12
    assert tiny.model.preset == "svrt_tiny" and tiny.loss.vgg == 0.0 and tiny.train.device == "auto"


def test_model_preset_with_field_overrides() -> None:
    cfg = load_run_config("tiny", ["model.vrt.window_size=[3, 4, 4]", "model.fusion=early", "train.steps=7"])
    m = cfg.model.config
    assert m.vrt.window_size == (3, 4, 4) and m.fusion == "early" and cfg.train.steps == 7
    assert m.vrt.embed_dims == load_run_config("tiny").model.config.vrt.embed_dims  # the rest: the preset's
    plain = cfg.to_dict()["model"]
    assert plain["preset"] == "svrt_tiny" and plain["vrt"]["window_size"] == [3, 4, 4]


def test_base_chain_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("base: tiny\ntrain:\n  lr: 5.0e-4\n  steps: 9\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  steps: 11\n")
    cfg = load_run_config(tmp_path / "child.yaml", ["data.crop=[64, 128]"])
    assert (cfg.train.lr, cfg.train.steps, cfg.data.crop) == (5e-4, 11, (64, 128))
    assert cfg.data.clip_len == load_run_config("tiny").data.clip_len
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(RunConfigError, match="'base' chain loops back"):
        load_run_config(tmp_path / "loop.yaml")


def test_replace_records_values() -> None:
    cfg = load_run_config("tiny").replace("data", spike_mean=(0.5,), spike_std=(2.0,))
    assert cfg.data.spike_mean == (0.5,) and RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(RunConfigError, match="unknown section 'model'"):
        cfg.replace("model", preset=None)


def test_errors_name_key_source_and_choices(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny", "train": {"lr": "fast"}}))
    with pytest.raises(RunConfigError, match=rf"config {path}: train\.lr must be float, got 'fast' \(str\)"):
        load_run_config(path)
    with pytest.raises(RunConfigError, match=r"override 'train\.stepz=3' \(on preset 'tiny'\): unknown key "
                                             r"'train\.stepz'; valid keys in section 'train': accumulate, .*steps"):
        load_run_config("tiny", ["train.stepz=3"])
    with pytest.raises(RunConfigError, match=r"override 'train\.precision=fp8' .*train\.precision must be one of "
                                             r"'fp32', 'bf16', 'fp16', 'fp64', got 'fp8'"):
        load_run_config("tiny", ["train.precision=fp8"])
    with pytest.raises(RunConfigError, match=r"override 'train\.steps=1\.5' .*train\.steps must be int"):
        load_run_config("tiny", ["train.steps=1.5"])
    with pytest.raises(RunConfigError, match=r"unknown key 'trian'; valid sections: model, data, train, loss, log"):
        load_run_config("tiny", ["trian.steps=3"])
    with pytest.raises(RunConfigError, match=r"model\.preset must be one of svrt_tiny, svrt_base or null, got 'big'"):
        load_run_config("tiny", ["model.preset=big"])
    with pytest.raises(RunConfigError, match=r"unknown key 'model\.vrt\.depth'; valid keys in section 'model\.vrt'"):
        load_run_config("tiny", ["model.vrt.depth=3"])
    heads = r"preset 'tiny' with override 'model\.tsa_heads=3': model: .*not divisible by tsa_heads=3"
    with pytest.raises(RunConfigError, match=heads):
        load_run_config("tiny", ["model.tsa_heads=3"])
    with pytest.raises(RunConfigError, match=r"train\.steps must be >= 1, got 0"):
        load_run_config("tiny", ["train.steps=0"])
    graph = ["train.cuda_graph=true"]
    with pytest.raises(RunConfigError, match=r"train\.cuda_graph replays one micro-batch per step: set "
                                             r"train\.accumulate=1 \(got 2\)"):
        load_run_config("tiny", [*graph, "train.accumulate=2", "train.device=cuda"])
    with pytest.raises(RunConfigError, match=r"train\.cuda_graph does not run with fp16's loss scaler"):
        load_run_config("tiny", [*graph, "train.precision=fp16", "train.device=cuda"])
    with pytest.raises(RunConfigError, match=r"train\.cuda_graph needs a CUDA device, got train\.device=cpu"):
        load_run_config("tiny", [*graph, "train.device=cpu"])
    with pytest.raises(RunConfigError, match=r"train\.attention=flex trains on a GPU only .*got train\.device=cpu"):
        load_run_config("tiny", ["train.attention=flex", "train.device=cpu"])
    with pytest.raises(RunConfigError, match=r"'nope\.yaml' is neither a YAML file nor a preset; .*tiny, svrt-base"):
        load_run_config("nope.yaml")
    assert preset_path("tiny").is_file()
