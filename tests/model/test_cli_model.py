"""``svrt-model`` CLI: help without torch, the profile command's error path on a machine without CUDA."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from cli.model import main
from tests.conftest import REPO


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from cli.model import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "assert all(c in r.output for c in ('train', 'eval', 'infer', 'profile', 'summary')); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_profile_help_lists_switches() -> None:
    result = CliRunner().invoke(main, ["profile", "--help"])
    assert result.exit_code == 0
    for flag in ("--preset", "--precision", "--attention", "--checkpoint", "--compile", "--graph"):
        assert flag in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_profile_without_cuda_is_a_clean_error() -> None:
    result = CliRunner().invoke(main, ["profile", "--preset", "tiny", "--iters", "1"])
    assert result.exit_code == 1
    assert "profile_vrt: needs a CUDA device" in result.output


def test_profile_rejects_bad_size() -> None:
    result = CliRunner().invoke(main, ["profile", "--size", "64by64"])
    assert result.exit_code != 0 and "expected HxW" in result.output


@pytest.mark.needs_cuda
def test_profile_runs_on_the_gpu() -> None:
    result = CliRunner().invoke(main, ["profile", "--preset", "tiny", "--iters", "2", "--warmup", "1",
                                       "--compile", "none"])
    assert result.exit_code == 0, result.output
    assert " ms (min " in result.output and "GiB" in result.output


def test_help_promises_only_commands_that_exist() -> None:
    """The group's help names no command that is not registered (train/eval/infer/summary come later)."""
    import re

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    prose = result.output.split("Commands:")[0].lower()
    for verb in ("train", "evaluate", "eval", "infer", "inference", "summary", "export"):
        if re.search(rf"\b{verb}\b", prose):
            assert verb in main.commands, f"svrt-model --help mentions {verb!r}, which is no command"
    assert set(main.commands) >= {"profile"} and "profile" in prose


def test_summary_of_a_preset_without_tracing() -> None:
    result = CliRunner().invoke(main, ["summary", "--preset", "svrt_base", "--no-activations"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()}
    assert "18,263,751" in rows["VRT"] and "4,812,672" in rows["spike"] and "23,675,463" in rows["total"]


def test_summary_of_a_yaml_config_traces_activations(tmp_path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        "spike_bins: 8\nchannels_per_scale: [16, 16, 16, 16]\n"
        "vrt: {img_size: [2, 64, 64], window_size: [2, 8, 8], depths: [1, 1, 1, 1, 1, 1, 1, 1], indep_reconsts: [7],\n"
        "      embed_dims: [16, 16, 16, 16, 16, 16, 16, 24], num_heads: [2, 2, 2, 2, 2, 2, 2, 2],"
        " deformable_groups: 4}\n"
    )
    result = CliRunner().invoke(main, ["summary", str(path), "--clip", "2x64x64", "--spike-size", "32x32"])
    assert result.exit_code == 0, result.output
    assert "clip 1x2x3x64x64, spikes 1x2x8x32x32" in result.output
    fusion = next(line for line in result.output.splitlines() if line.startswith("fusion"))
    assert float(fusion.split()[-1]) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["summary"], "give either CONFIG_FILE or --preset"),
        (["summary", "--preset", "svrt_tiny", "--clip", "5x256"], "expected TxHxW"),
        (["summary", "/nonexistent/model.yaml"], "/nonexistent/model.yaml: cannot read the model config"),
        (["summary", "--preset", "svrt_tiny", "--clip", "6x60x60"], "frame size 60x60 is not supported"),
    ],
)
def test_summary_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_summary_names_unknown_yaml_keys(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("spike_bins: 8\nheads: 4\n")
    result = CliRunner().invoke(main, ["summary", str(path), "--no-activations"])
    assert result.exit_code == 1 and "unknown keys ['heads']" in result.output
