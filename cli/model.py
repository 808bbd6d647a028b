"""``svrt-model``: ``train`` (VRT+Spike on a store), ``eval`` (PSNR/SSIM of a checkpoint on a split),
``infer`` (restored PNG frames from a store or a raw dataset), ``profile`` (time a step, or each part of it)
and ``summary`` (parameters and activation memory of a model).

Each command is thin: parse options, call one library function, report. torch is imported inside the
commands only: ``svrt-model --help`` must not import it.
"""

from __future__ import annotations

import click

from cli.options import library_errors, parse_size

PRESETS = ("gopro", "dvd", "svrt", "tiny", "svrt-base", "svrt-tiny")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrt")
def main() -> None:
    """VRT / VRT+Spike models: train on a store (train), measure a checkpoint (eval), deblur frames (infer),
    time a step or each part of it (profile), count parameters and activation memory (summary)."""


@main.command()
@click.option("--preset", type=click.Choice(PRESETS), default="gopro", show_default=True,
              help="Network: VRT for GoPro/DVD deblurring, the S-VRT baseline backbone or the tiny test config; "
                   "VRT+Spike: svrt-base (the seed's S-VRT) or svrt-tiny.")
@click.option("--frames", type=click.IntRange(min=2), default=None, help="T (default: the preset's img_size).")
@click.option("--size", "size_text", default=None, metavar="HxW", help="Frame size (default: the preset's).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--spike-scale", type=click.Choice(("1", "0.5")), default="1", show_default=True,
              help="VRT+Spike presets: spike frames at the RGB size (1) or at half size (0.5, as Spk-GoPro).")
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
@click.option("--stages", is_flag=True,
              help="Break the step down per part (stages 1-8, spike encoder, temporal attention and fusion per "
                   "scale): a table of forward/backward time and memory per part, on --device (no CUDA graph).")
@click.option("--device", default="cuda", show_default=True, help="cuda, cuda:N, or cpu (cpu: --stages only).")
@library_errors
def profile(preset: str, frames: int | None, size_text: str | None, batch: int, spike_scale: str, mode: str,
            precision: str, attention: str, checkpoint: str, compile_parts: str, graph: bool, deform_backend: str,
            iters: int, warmup: int, stages: bool, device: str) -> None:
    """Time one forward or training step on the GPU and report its peak memory (--stages: per part)."""
    import svrt_model as presets
    from svrt_model.profiling import profile_model_stages, profile_vrt

    cfg = {"gopro": presets.gopro_deblurring, "dvd": presets.dvd_deblurring, "svrt": presets.svrt_baseline,
           "tiny": presets.tiny, "svrt-base": presets.svrt_base, "svrt-tiny": presets.svrt_tiny}[preset]()
    vrt_cfg = cfg.vrt if isinstance(cfg, presets.VRTSpikeConfig) else cfg
    t = frames or vrt_cfg.img_size[0]
    h, w = parse_size(size_text) if size_text else vrt_cfg.img_size[1:]
    common = dict(shape=(batch, t, 3, h, w), spike_scale=float(spike_scale), mode=mode, precision=precision,
                  attention=attention, checkpoint=checkpoint, compile=compile_parts, deform_backend=deform_backend,
                  iters=iters, warmup=warmup, device=device)
    if stages:
        click.echo(profile_model_stages(cfg, **common).table())
        return
    res = profile_vrt(cfg, graph=graph, **common)
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


def _tile(text: str) -> object:
    """``--tile`` as a :class:`svrt_model.restore.Tile`, None or ``"clip"`` (resolved with the checkpoint's
    config); a bad value is an svrt error (one line)."""
    from svrt_model.restore import Tile

    return "clip" if text.strip().lower() == "clip" else Tile.parse(text)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


_TILE_HELP = ("Test-time tiling: 'default' (VRT's protocol: clips of 18 frames overlapping by 2, 192x192 patches "
              "overlapping by 20), 'clip' (whole frames in clips of the checkpoint's training length, overlapping by "
              "one: as validation scores it), 'none' (whole sequences and frames: needs the memory), or TxHxW (0 "
              "leaves an axis untiled).")
_ENSEMBLE_HELP = ("Test-time self-ensemble: average the outputs over this many flips / transpositions of the input "
                  "(1: the model alone; 8: all eight, each a forward).")
_EMA_HELP = "Use the EMA weights (--ema) or the trained ones (--no-ema); default: EMA when the run kept them."


@main.command("eval")
@click.argument("checkpoint", metavar="CKPT")
@click.option("--store", required=True, metavar="STORE.zarr", help="Store written by `svrt-data voxelize`.")
@click.option("--split", default="test", show_default=True, help="Split to evaluate (needs sharp frames).")
@click.option("--json", "json_path", default=None, metavar="OUT.json",
              help='Write {"overall": {psnr_input, psnr_output, ssim_input, ssim_output}, "sequences": {...}}.')
@click.option("--csv", "csv_path", default=None, metavar="OUT.csv", help="Write per-frame scores and means.")
@click.option("--tile", "tile_text", default="default", show_default=True, help=_TILE_HELP)
@click.option("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available).")
@click.option("--precision", type=click.Choice(("fp32", "tf32", "bf16", "fp16")), default="fp32", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Patches per forward.")
@click.option("--sequences", default=None, metavar="A,B", help="Only these sequences of the split.")
@click.option("--ema/--no-ema", default=None, help=_EMA_HELP)
@click.option("--ensemble", type=click.Choice(("1", "2", "4", "8")), default="1", show_default=True,
              help=_ENSEMBLE_HELP)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers.")
@library_errors
def eval_(checkpoint: str, store: str, split: str, json_path: str | None, csv_path: str | None, tile_text: str,
          device: str | None, precision: str, batch: int, sequences: str | None, ema: bool | None,
          ensemble: str, workers: int) -> None:
    """PSNR and SSIM of the blurry input and of CKPT's output against the sharp frames, per sequence and over
    all frames (RGB, 0-255, SSIM 11x11 Gaussian sigma 1.5), printed as a table and written as JSON / CSV."""
    from svrt_model.inference import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, store, split, tile=_tile(tile_text), device=device, precision=precision,
                                 batch_size=batch, sequences=_names(sequences), use_ema=ema, ensemble=int(ensemble),
                                 num_workers=workers)
    click.echo(report.table())
    if json_path:
        report.write_json(json_path)
        click.echo(f"wrote {json_path}")
    if csv_path:
        report.write_csv(csv_path)
        click.echo(f"wrote {csv_path}")


@main.command()
@click.argument("checkpoint", metavar="CKPT")
@click.option("--store", default=None, metavar="STORE.zarr", help="Restore a store's split (with --split) ...")
@click.option("--split", default=None, help="... this split of --store.")
@click.option("--raw", default=None, metavar="RAW_DIR",
              help="... or a raw dataset (with --align), voxelized on the fly.")
@click.option("--align", default=None, metavar="ALIGN.csv", help="The raw dataset's align log (`svrt-data align`).")
@click.option("--out", required=True, metavar="DIR", help="Frames go to DIR/<sequence>/<frame>.png.")
@click.option("--tile", "tile_text", default="default", show_default=True, help=_TILE_HELP)
@click.option("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available).")
@click.option("--precision", type=click.Choice(("fp32", "tf32", "bf16", "fp16")), default="fp32", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Patches per forward.")
@click.option("--sequences", default=None, metavar="A,B", help="Only these sequences.")
@click.option("--ema/--no-ema", default=None, help=_EMA_HELP)
@click.option("--ensemble", type=click.Choice(("1", "2", "4", "8")), default="1", show_default=True,
              help=_ENSEMBLE_HELP)
@click.option("--voxel-mode", type=click.Choice(("count", "linear")), default="count", show_default=True,
              help="--raw: the voxel mode of the store the model was trained on.")
@click.option("--overwrite", is_flag=True, help="Replace DIR/<sequence> folders that an earlier infer wrote.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers.")
@library_errors
def infer(checkpoint: str, store: str | None, split: str | None, raw: str | None, align: str | None, out: str,
          tile_text: str, device: str | None, precision: str, batch: int, sequences: str | None, ema: bool | None,
          ensemble: str, voxel_mode: str, overwrite: bool, workers: int) -> None:
    """Deblur every sequence of a store's split or of a raw dataset with CKPT into PNG frames."""
    from svrt_model.inference import infer_checkpoint

    folders = infer_checkpoint(checkpoint, out, store=store, split=split, raw=raw, align=align, tile=_tile(tile_text),
                               device=device, precision=precision, batch_size=batch, sequences=_names(sequences),
                               use_ema=ema, ensemble=int(ensemble), voxel_mode=voxel_mode, overwrite=overwrite,
                               num_workers=workers)
    for f in folders:
        click.echo(f"wrote {f} ({sum(1 for p in f.iterdir() if p.suffix == '.png')} frames)")


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
