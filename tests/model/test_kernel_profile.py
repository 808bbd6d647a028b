"""The kernel-profile summary of ``bench_svrt.py --profile``: categories from real kernel names, per-step sums,
the markdown tables, and the device events taken from a profiler run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from svrt_model.errors import ModelConfigError
from svrt_model.kernel_profile import CATEGORIES, categorize, format_kernel_tables, kernel_events, summarize_kernels


@pytest.mark.parametrize(("name", "category"), [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "GEMM"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", "GEMM"),
    ("triton_tem_fused_mm_0", "GEMM"),
    ("triton_tem_fused_flex_attention_0", "attention/SDPA"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>)", "attention/SDPA"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>", "attention/SDPA"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "elementwise"),
    ("triton_poi_fused_add_mul_0", "elementwise"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float>", "reductions/norms"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>", "reductions/norms"),
    ("triton_red_fused_native_layer_norm_1", "reductions/norms"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>", "reductions/norms"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", "copies/permutes/cat"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<...>", "copies/permutes/cat"),
    ("void at::native::index_elementwise_kernel<128, 4>", "copies/permutes/cat"),
    ("void at::native::roll_cuda_kernel<float>", "copies/permutes/cat"),
    ("Memcpy DtoD (Device -> Device)", "copies/permutes/cat"),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<float>", "copies/permutes/cat"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
    ("deform_im2col_bf16", "deformable conv"),
    ("void at::native::grid_sampler_2d_cuda_kernel<float, int>", "other"),
    ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "other"),
    ("some_unheard_of_kernel", "other"),
])
def test_kernel_names_fall_in_their_category(name: str, category: str) -> None:
    assert categorize(name) == category


def test_summary_sums_per_step_and_per_category() -> None:
    gemm, gelu, copy = "ampere_bf16_s16816gemm_bf16", "GeluCUDAKernelImpl", "direct_copy_kernel_cuda"
    events = [(gemm, 300.0), (gemm, 100.0), (gelu, 50.0), (copy, 20.0), (copy, 30.0), (copy, 50.0)]
    s = summarize_kernels(events, steps=2)
    assert s.total_ms == pytest.approx(0.275)  # 550 us over 2 steps
    assert s.kernels[0] == (gemm, "GEMM", 1.0, pytest.approx(0.2))
    assert s.kernels[1] == (copy, "copies/permutes/cat", 1.5, pytest.approx(0.05))
    cats = {c: (n, ms) for c, n, ms in s.categories}
    assert tuple(cats) == CATEGORIES
    assert cats["GEMM"] == (1, pytest.approx(0.2)) and cats["elementwise"] == (1, pytest.approx(0.025))
    assert cats["attention/SDPA"] == (0, 0.0)
    text = format_kernel_tables(s, "profile of a row", top=2)
    assert text.startswith("profile of a row: 0.3 ms of kernel time per step (mean of 2 steps)")
    assert "| GEMM | 1 | 0.20 | 72.7 |" in text
    assert f"| {gemm} | GEMM | 1 | 0.20 | 72.7 |" in text
    assert gelu not in text  # only the top 2 kernels are listed
    with pytest.raises(ModelConfigError, match="steps=0; expected the number of profiled steps"):
        summarize_kernels(events, 0)


def test_long_names_are_cut_and_pipes_escaped() -> None:
    s = summarize_kernels([("void k<a|b>" + "x" * 200, 10.0)], 1)
    row = format_kernel_tables(s, "t", width=40).splitlines()[-1]
    assert row.startswith("| k<a/b>") and "..." in row and len(row.split(" | ")[0]) == 2 + 40


def test_device_events_only() -> None:
    def event(name: str, device: DeviceType, us: float) -> SimpleNamespace:
        return SimpleNamespace(name=name, device_type=device, time_range=SimpleNamespace(elapsed_us=lambda: us))

    prof = SimpleNamespace(events=lambda: [event("aten::mm", DeviceType.CPU, 9.0), event("gemm", DeviceType.CUDA, 4.0)])
    assert kernel_events(prof) == [("gemm", 4.0)]
