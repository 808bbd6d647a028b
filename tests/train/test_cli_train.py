"""``svrt-model train``: help, a short run, and bad keys, types and paths as one line with exit status 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.model import main

pytestmark = pytest.mark.filterwarnings("ignore::svrt_model.errors.UntrainedSpyNetWarning")


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert re.search(pattern, lines[0]), lines[0]


def test_help_names_the_contract() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for text in ("CONFIG", "--store", "--out", "--resume", "KEY=VALUE", "tiny", "svrt-base", "svrt-fast"):
        assert text in result.output


def test_train_runs_and_reports(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(micro_config), "--store", str(train_store), "--out", str(out),
                                       "train.steps=1"])
    assert result.exit_code == 0, result.output
    assert f"trained 1 steps into {out} (no validation)" in result.output
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()


@pytest.mark.parametrize(("args", "pattern"), [
    (["train.stepz=3"], r"override 'train\.stepz=3' \(on config .*micro\.yaml\): unknown key 'train\.stepz'; "
                        r"valid keys in section 'train': accumulate"),
    (["train.steps=many"], r"train\.steps must be int, got 'many' \(str\)"),
    (["data.augment=rotate"], r"data\.augment must be one of 'none', 'flips', 'dihedral', got 'rotate'"),
    (["steps"], r"override 'steps': expected KEY=VALUE"),
])
def test_bad_overrides_are_one_line(train_store: Path, micro_config: Path, tmp_path: Path, args: list[str],
                                    pattern: str) -> None:
    result = CliRunner().invoke(main, ["train", str(micro_config), "--store", str(train_store), "--out",
                                       str(tmp_path / "run"), *args])
    _one_line_error(result, pattern)
    assert not (tmp_path / "run").exists()


def test_bad_paths_are_one_line(train_store: Path, micro_config: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(tmp_path / "nope.yaml"), "--store", str(train_store), "--out",
                                  str(tmp_path / "run")])
    _one_line_error(result, r"nope\.yaml' is neither a YAML file nor a preset")
    result = runner.invoke(main, ["train", str(micro_config), "--store", str(tmp_path / "missing.zarr"), "--out",
                                  str(tmp_path / "run")])
    _one_line_error(result, r"missing\.zarr")
    result = runner.invoke(main, ["train", str(micro_config), "--store", str(train_store), "--out",
                                  str(tmp_path / "run"), "loss.vgg=0.1"])
    _one_line_error(result, r"loss\.vgg=0\.1 needs VGG16 weights: put torchvision's VGG16 .*vgg16-397923af\.pth")
