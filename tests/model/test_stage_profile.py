"""Per-part profiling: spans timed by hooks (no timing values asserted), on the CPU; the CLI table."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.checkpoint import checkpoint

from cli.model import main
from svrt_errors import SvrtValueError
from svrt_model.stage_profile import Span, model_spans, profile_stages, vrt_spans


class Toy(nn.Module):
    """a, then b.0 (checkpointed: recomputed in backward) and b.1, then c twice (a module reused)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.c = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.a(x) + y
        x = checkpoint(self.b[0], x, use_reentrant=False)
        x = self.b[1](torch.relu(x))
        return self.c(self.c(x))


SPANS = [Span("a", "a", "a"), Span("b", "b.0", "b.1"), Span("c", "c", "c")]


def test_spans_are_timed_once_per_call_forward_and_backward():
    prof = profile_stages(Toy(), [torch.rand(4, 8), torch.rand(4, 8)], spans=SPANS, iters=2, warmup=1)
    assert [r.name for r in prof.rows] == ["a", "b", "c"]
    assert [r.calls for r in prof.rows] == [1, 1, 2]  # the checkpoint's recompute is not a second call
    for r in prof.rows:
        assert r.forward_ms > 0 and r.backward_ms > 0
        assert r.fwd_peak_mib is None and r.kept_mib is None  # memory is measured on CUDA only
    assert sum(r.forward_ms for r in prof.rows) <= prof.step_forward_ms
    assert sum(r.backward_ms for r in prof.rows) <= prof.step_backward_ms


def test_forward_mode_has_no_backward_column():
    prof = profile_stages(Toy(), [torch.rand(4, 8), torch.rand(4, 8)], spans=SPANS, mode="forward", iters=1,
                          warmup=0)
    assert all(r.backward_ms is None for r in prof.rows) and prof.step_backward_ms is None
    assert "| a | " in prof.table() and "| - |" in prof.table()


def test_span_errors():
    x = [torch.rand(4, 8), torch.rand(4, 8)]
    with pytest.raises(SvrtValueError, match="span 'd' names module 'd', which Toy does not have"):
        profile_stages(Toy(), x, spans=[Span("d", "d", "d")])

    class Unused(Toy):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Linear(8, 8)

    with pytest.raises(SvrtValueError, match="span 'spare' never ran in a step"):
        profile_stages(Unused(), x, spans=[Span("spare", "spare", "spare")], iters=1, warmup=0)
    with pytest.raises(SvrtValueError, match="no spans known for Toy"):
        profile_stages(Toy(), x)
    with pytest.raises(SvrtValueError, match="mode must be 'train' or 'forward'"):
        profile_stages(Toy(), x, spans=SPANS, mode="eval")


def test_vrt_spans_cover_the_backbone_in_order():
    from svrt_model import VRT, tiny

    spans = model_spans(VRT(tiny()))
    assert [s.name for s in spans] == ["SpyNet flows", "conv_first"] + [f"stage {i}" for i in range(1, 8)] + [
        "stage 8 (reconstruction)", "conv_after_body + conv_last"]
    assert vrt_spans("vrt.")[2] == Span("stage 1", "vrt.stage1", "vrt.stage1")


def test_profile_cli_prints_the_full_models_per_stage_table_on_the_cpu():
    result = CliRunner().invoke(main, ["profile", "--preset", "svrt-tiny", "--stages", "--device", "cpu", "--frames",
                                       "2", "--size", "64x64", "--spike-scale", "0.5", "--iters", "1", "--warmup",
                                       "0", "--precision", "fp32", "--compile", "none", "--checkpoint", "none"])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in result.output.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")]
    names = [r[0].strip() for r in rows]
    fused = [part for i in range(1, 5) for part in (f"stage {i}", f"fusion scale {i}")]
    assert names == ["part", "spike encoder"] + [f"temporal attention scale {i}" for i in range(1, 5)] + [
        "SpyNet flows", "conv_first"] + fused + [f"stage {i}" for i in range(5, 8)] + [
        "stage 8 (reconstruction)", "conv_after_body + conv_last", "other (outside these parts)", "**whole step**"]
    for r in rows[1:-2]:
        fwd, bwd, total = (float(v) for v in r[1:4])
        assert fwd > 0 and bwd > 0 and total == pytest.approx(fwd + bwd, abs=0.02)
        assert re.fullmatch(r"\d+\.\d%", r[4].strip())
        assert [v.strip() for v in r[5:]] == ["-", "-", "-"]  # memory is measured on CUDA only
    assert "VRTSpike train 1x2x3x64x64, spikes K=8 32x32 fp32" in result.output and "(cpu)" in result.output


@pytest.mark.needs_cuda
def test_profile_cli_per_stage_table_on_the_gpu_has_memory():
    result = CliRunner().invoke(main, ["profile", "--preset", "svrt-tiny", "--stages", "--frames", "4", "--size",
                                       "64x64", "--iters", "2", "--warmup", "1", "--compile", "none"])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in result.output.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")][1:-2]
    assert len(rows) == 20
    for r in rows:
        assert float(r[1]) > 0 and float(r[2]) > 0 and float(r[5]) >= 0 and float(r[6]) >= 0


def test_profile_cli_whole_step_needs_cuda_and_stages_check_the_device():
    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    result = CliRunner().invoke(main, ["profile", "--preset", "svrt-tiny", "--stages"])
    assert result.exit_code == 1 and "CUDA is not available; use --device cpu" in result.output
    result = CliRunner().invoke(main, ["profile", "--preset", "tiny", "--device", "cpu"])
    assert result.exit_code == 1 and "profile_vrt: needs a CUDA device, got 'cpu'" in result.output
