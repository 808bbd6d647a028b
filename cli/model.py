"""``svrt-model``: ``train`` (VRT+Spike on a store), ``profile`` (time a VRT step) and ``summary``
(parameters and activation memory of a model).

Each command is thin: parse options, call one library function, report. torch is imported inside the
commands only: ``svrt-model --help`` must not import it.
"""

from __future__ import annotations

import click

from cli.options import library_errors, parse_size

PRESETS = ("gopro", "dvd", "svrt", "tiny")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrt")
def main() -> None:
    """VRT / VRT+Spike models: train on a store (train), time a step and its GPU memory (profile), count
    parameters and activation memory (summary)."""


@main.command()
@click.option("--preset", type=click.Choice(PRESETS), default="gopro", show_default=True,
              help="Network: GoPro/DVD deblurring, the S-VRT baseline backbone, or the tiny test config.")
@click.option("--frames", type=click.IntRange(min=2), default=None, help="T (default: the preset's img_size).")
@click.option("--size", "size_text", default=None, metavar="HxW", help="Frame size (default: the preset's).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--mode", type=click.Choice(("train", "forward")), default="train", show_default=True,
              help="train: forward + L1 loss + backward; forward: inference.")
@click.option("--precision", type=click.Choice(("fp32", "tf32", "bf16", "fp16")), default="bf16", show_default=True)
@click.option("--attention", type=click.Choice(("fused", "plain")), default="fused", show_default=True)
@click.option("--checkpoint", default="ffn+align1", show_default=True,
              help="Gradient checkpointing policy: none, official, all, or a '+'-joined subset of attn, ffn, align, "
                   "align-full (stages 1 and 7), align1 (stage 1).")
@click.option("--compile", "compile_parts", default="attn+ffn", show_default=True,
              help="Block parts run through torch.compile: none, ffn, attn, attn+ffn (first call: minutes).")
@click.option("--graph/--no-graph", default=True, show_default=True,
              help="Replay the whole step as one CUDA graph (no per-op launch cost).")
@click.option("--deform-backend", type=click.Choice(("auto", "reference", "cuda")), default="auto", show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@library_errors
def profile(preset: str, frames: int | None, size_text: str | None, batch: int, mode: str, precision: str,
            attention: str, checkpoint: str, compile_parts: str, graph: bool, deform_backend: str, iters: int,
            warmup: int) -> None:
    """Time one VRT forward or training step on the GPU and report its peak memory."""
    from svrt_model import config as presets
    from svrt_model.profiling import profile_vrt

    cfg = {"gopro": presets.gopro_deblurring, "dvd": presets.dvd_deblurring, "svrt": presets.svrt_baseline,
           "tiny": presets.tiny}[preset]()
    t = frames or cfg.img_size[0]
    h, w = parse_size(size_text) if size_text else cfg.img_size[1:]
    res = profile_vrt(
        cfg, shape=(batch, t, 3, h, w), mode=mode, precision=precision, attention=attention, checkpoint=checkpoint,
        compile=compile_parts, graph=graph, deform_backend=deform_backend, iters=iters, warmup=warmup,
    )
    click.echo(
        f"{preset} {mode} {batch}x{t}x3x{h}x{w} {precision} attention={attention} checkpoint={checkpoint} "
        f"compile={compile_parts} graph={graph}: {res.median_ms:.1f} ms (min {res.min_ms:.1f}, max {res.max_ms:.1f}, "
        f"{res.iters} iters), peak {res.peak_gib:.2f} GiB, first call {res.first_call_s:.1f} s"
    )


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("config")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--store", required=True, metavar="STORE.zarr", help="Store written by `svrt-data voxelize`.")
@click.option("--out", "run_dir", required=True, metavar="RUN_DIR",
              help="Run directory: last.pt, best.pt, config.yaml, metrics.jsonl, images/.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from RUN_DIR/last.pt.")
@library_errors
def train(config: str, overrides: tuple[str, ...], store: str, run_dir: str, resume: bool) -> None:
    """Train VRT+Spike on a store; checkpoints and logs go to RUN_DIR.

    \b
    CONFIG     a YAML file, or a preset: tiny, svrt-base, svrt-fast
    KEY=VALUE  dotted overrides, e.g. train.steps=1000 data.batch_size=2
    Several GPUs: torchrun --nproc_per_node=N -m cli.model train ... (DDP)
    """
    from svrt_model.train import load_run_config
    from svrt_model.train import train as run_training
    from svrt_model.train.distributed import DistContext

    cfg = load_run_config(config, overrides)
    ctx = DistContext.from_env(cfg.train.device)
    try:
        result = run_training(cfg, store=store, run_dir=run_dir, resume=resume, dist=ctx)
    finally:
        ctx.close()
    if ctx.is_main:
        best = "no validation" if result.best_psnr is None else f"best validation PSNR {result.best_psnr:.2f} dB"
        skipped = f", {result.skipped} non-finite steps skipped" if result.skipped else ""
        click.echo(f"trained {result.steps} steps into {result.run_dir} ({best}{skipped}): "
                   f"{result.last}, {result.best}")


SPIKE_PRESETS = ("svrt_base", "svrt_tiny")


def _clip(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected TxHxW such as 5x256x256, got {text!r}", param_hint="--clip")
    t, h, w = (int(p) for p in parts)
    return t, h, w


@main.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--preset", type=click.Choice(SPIKE_PRESETS), default=None,
              help="A VRTSpike preset instead of CONFIG_FILE (a YAML mapping of VRTSpikeConfig fields).")
@click.option("--clip", "clip_text", default=None, metavar="TxHxW",
              help="RGB clip for the activation estimate (default: the config's vrt.img_size).")
@click.option("--spike-size", "spike_text", default=None, metavar="HxW", help="Spike voxel size (default: RGB size).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--activations/--no-activations", default=True, show_default=True,
              help="Trace a training forward on the meta device to estimate saved activations.")
@library_errors
def summary(config_file: str | None, preset: str | None, clip_text: str | None, spike_text: str | None, batch: int,
            activations: bool) -> None:
    """Parameters per part (VRT, spike encoder, temporal attention, fusion) and activation memory of a clip."""
    from svrt_model.summary import summarize
    from svrt_model.vrt_spike_config import load_config, svrt_base, svrt_tiny

    if (config_file is None) == (preset is None):
        raise click.UsageError("give either CONFIG_FILE or --preset (one of them)")
    cfg = load_config(config_file) if config_file else {"svrt_base": svrt_base, "svrt_tiny": svrt_tiny}[preset]()
    clip = _clip(clip_text) if clip_text else None
    spike_size = parse_size(spike_text, "--spike-size") if spike_text else None
    result = summarize(cfg, clip=clip, batch=batch, spike_size=spike_size, activations=activations)
    click.echo(result.format(title=preset or config_file))


if __name__ == "__main__":  # `python -m cli.model` (e.g. under torchrun -m)
    main()
