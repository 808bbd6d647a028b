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
        "assert 'profile' in r.output; print('torch' in sys.modules)"
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
