"""Run configuration: YAML (a file or a shipped preset) plus ``key=value`` overrides -> one frozen ``RunConfig``.

This is the one place where YAML becomes dataclasses; nothing downstream reads YAML or argparse values.
Sections:

- ``model``: ``preset`` (``svrt_tiny`` / ``svrt_base``: the :mod:`svrt_model` factory functions) plus
  any :class:`~svrt_model.VRTSpikeConfig` field (``vrt`` holds the backbone's ``VRTConfig`` fields), which
  override the preset's;
- ``data``: which clips (split, clip length, crop, augmentation), the loader, spike normalisation;
- ``train``: optimisation (``train.steps`` = optimizer steps of the run), precision, checkpoint cadence,
  the model's run-time switches (gradient checkpointing, compile, attention path);
- ``loss``: Charbonnier and VGG perceptual weights;
- ``log``: progress bar, metrics, images, validation.

A YAML file may start from another with ``base: NAME_OR_PATH``. Presets ship with the package
(``svrt_model/train/presets/*.yaml``): ``tiny``, ``svrt-base``, ``svrt-fast``. Overrides are dotted keys
with YAML values (``train.steps=100``, ``data.crop=[64, 128]``, ``loss.vgg_weights=/w/vgg16.pth``).
Unknown keys and wrong types raise :class:`RunConfigError` naming the key, the file or override it came
from, and the valid choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from svrt_errors import SvrtValueError
from svrt_model import VRTSpikeConfig, svrt_base, svrt_tiny
from svrt_model.errors import RunConfigError
from svrt_model.restore.tiling import Tile
from svrt_model.train.schema import Origin, build, deep_merge, parse_override, set_path, to_plain
from svrt_model.vrt_spike_config import BIT_INPUTS

__all__ = [
    "MODEL_PRESETS",
    "PRESETS",
    "PRESET_DIR",
    "DataConfig",
    "LogConfig",
    "LossConfig",
    "ModelSection",
    "RunConfig",
    "TrainConfig",
    "load_run_config",
    "preset_path",
]

PRESET_DIR = Path(__file__).with_name("presets")
PRESETS = ("tiny", "svrt-base", "svrt-fast")
MODEL_PRESETS = {"svrt_tiny": svrt_tiny, "svrt_base": svrt_base}
"""``model.preset`` values: the factory functions of :mod:`svrt_model` they call."""

SECTIONS = ("model", "data", "train", "loss", "log")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RunConfigError(message)


@dataclass(frozen=True)
class ModelSection:
    """The network: ``preset`` (or None) and the resolved :class:`~svrt_model.VRTSpikeConfig`."""

    preset: str | None
    config: VRTSpikeConfig

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, **to_plain(self.config)}


@dataclass(frozen=True)
class DataConfig:
    """Training clips and their loader (see ``docs/dataset.md``).

    ``spike_mean`` / ``spike_std``: normalisation of ``log1p`` voxels (per bin or one value); None means
    "measure them on the training split at start" (``stats_frames`` frames), and the run records what it
    measured in its resolved config, so evaluation normalises as training did.
    """

    train_split: str = "train"
    clip_len: int = 5
    crop: int | tuple[int, int] | None = 256
    stride: int | None = None
    augment: Literal["none", "flips", "dihedral"] = "dihedral"
    spike_input: Literal["voxels", "raw"] = "voxels"
    batch_size: int = 1
    num_workers: int = 4
    seed: int = 0
    log1p: bool = True
    normalize: bool = True
    spike_mean: tuple[float, ...] | None = None
    spike_std: tuple[float, ...] | None = None
    stats_frames: int = 64
    cache_bytes: int = 0

    def __post_init__(self) -> None:
        _check(self.clip_len >= 2, f"data.clip_len must be >= 2 (VRT needs neighbours), got {self.clip_len}")
        _check(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")
        _check(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _check(self.stats_frames >= 1, f"data.stats_frames must be >= 1, got {self.stats_frames}")
        _check((self.spike_mean is None) == (self.spike_std is None),
               "data.spike_mean and data.spike_std go together: give both or neither")
        if self.spike_std is not None:
            _check(all(s > 0 for s in self.spike_std), f"data.spike_std must be positive, got {self.spike_std}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (AdamW, cosine schedule with linear warm-up) and the training loop.

    ``fix_iter`` steps of frozen warm-up for parameters whose names contain one of ``fix_keys`` (SpyNet and
    the deformable alignment, VRT's recipe); afterwards they train at ``lr * fix_lr_mul``.
    ``max_nonfinite``: consecutive non-finite steps (skipped) before the run stops. ``init="identity"``
    zeroes the backbone's last convolution, so the model starts as the identity (its output is the blurry
    input, a residual is learned on top) instead of input plus noise from random weights. ``threads``: torch's
    intra-op threads per process (``torch.set_num_threads``, process-global; None keeps torch's default). On
    a shared CPU one thread is often much faster than two: busy-waiting OpenMP threads collapse when the
    cores are oversubscribed. ``cuda_graph``: replay each step's forward, loss and backward from one CUDA
    graph (:mod:`svrt_model.train.graphed`), for models small enough that launching kernels is the step's
    cost; one CUDA process, ``accumulate: 1``, not fp16.
    """

    steps: int = 1000
    lr: float = 2e-4
    min_lr: float = 1e-7
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    accumulate: int = 1
    grad_clip: float | None = None
    precision: Literal["fp32", "bf16", "fp16", "fp64"] = "fp32"
    max_nonfinite: int = 20
    fix_iter: int = 0
    fix_keys: tuple[str, ...] = ("spynet", "deform")
    fix_lr_mul: float = 1.0
    ema_decay: float | None = None
    seed: int = 0
    init: Literal["default", "identity"] = "default"
    deterministic: bool = False
    device: str = "auto"
    threads: int | None = None
    grad_checkpoint: str = "none"
    spike_checkpoint: str = "none"
    compile: str = "none"
    attention: Literal["fused", "flex", "plain"] = "fused"
    cuda_graph: bool = False
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        _check(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, f"train.min_lr must be in [0, train.lr={self.lr}], got {self.min_lr}")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _check(all(0 <= b < 1 for b in self.betas), f"train.betas must be in [0, 1), got {list(self.betas)}")
        _check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.accumulate >= 1, f"train.accumulate must be >= 1, got {self.accumulate}")
        _check(self.grad_clip is None or self.grad_clip > 0,
               f"train.grad_clip must be positive or null (off), got {self.grad_clip}")
        _check(self.max_nonfinite >= 1, f"train.max_nonfinite must be >= 1, got {self.max_nonfinite}")
        _check(self.fix_iter >= 0, f"train.fix_iter must be >= 0, got {self.fix_iter}")
        _check(self.fix_lr_mul >= 0, f"train.fix_lr_mul must be >= 0, got {self.fix_lr_mul}")
        _check(self.ema_decay is None or 0 < self.ema_decay < 1,
               f"train.ema_decay must be in (0, 1) or null (no EMA), got {self.ema_decay}")
        _check(self.seed >= 0, f"train.seed must be >= 0, got {self.seed}")
        _check(self.threads is None or self.threads >= 1, f"train.threads must be >= 1 or null, got {self.threads}")
        _check(self.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"train.device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', got {self.device!r}")
        if self.cuda_graph:
            _check(self.accumulate == 1, f"train.cuda_graph replays one micro-batch per step: set train.accumulate=1 "
                                         f"(got {self.accumulate}) or train.cuda_graph=false")
            _check(self.precision != "fp16", "train.cuda_graph does not run with fp16's loss scaler: use "
                                             "train.precision=bf16 (or fp32), or train.cuda_graph=false")
            _check(self.device != "cpu", "train.cuda_graph needs a CUDA device, got train.device=cpu; set "
                                         "train.cuda_graph=false")
        _check(self.attention != "flex" or self.device != "cpu", "train.attention=flex trains on a GPU only "
               "(FlexAttention has no CPU backward), got train.device=cpu; set train.attention=fused")


@dataclass(frozen=True)
class LossConfig:
    """``charbonnier * Charbonnier(delta) + vgg * L1(VGG16 features)``; VGG weights from a local file."""

    charbonnier: float = 1.0
    charbonnier_delta: float = 1e-3
    vgg: float = 0.0
    vgg_layers: tuple[str, ...] = ("relu3_3",)
    vgg_weights: str | None = None

    def __post_init__(self) -> None:
        _check(self.charbonnier >= 0 and self.vgg >= 0,
               f"loss weights must be >= 0, got charbonnier={self.charbonnier}, vgg={self.vgg}")
        _check(self.charbonnier > 0 or self.vgg > 0, "loss: every loss weight is 0; set loss.charbonnier > 0")
        _check(self.charbonnier_delta > 0, f"loss.charbonnier_delta must be positive, got {self.charbonnier_delta}")


@dataclass(frozen=True)
class LogConfig:
    """Progress bar, ``metrics.jsonl`` every ``every`` steps, a PNG grid every ``image_every`` steps, a
    validation pass on ``val_split`` (null: none) of the training store, or of ``val_store`` when set (a store
    of other sequences, e.g. other scenes), every ``val_every`` steps (0: only at the end), restoring
    whole sequences with ``val_tile``: ``clip`` (clips of ``data.clip_len`` frames overlapping by one, whole
    frames: the context the model trained with), ``none`` (every frame of a sequence at once), ``default``
    (VRT's protocol) or ``TxHxW``; TensorBoard when installed and ``tensorboard`` is on.

    A model trained on short clips sees frames with neighbours on both sides only inside a clip, so it is
    scored on clips of its training length: restoring a whole sequence at once changes what most frames
    see (measured: +0.85 dB over the input with T=2 clips, -2.2 dB untiled, for the same weights)."""

    every: int = 10
    image_every: int = 0
    val_every: int = 0
    val_split: str | None = "test"
    val_store: str | None = None
    val_tile: str = "clip"
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("every", "image_every", "val_every"):
            _check(getattr(self, name) >= 0, f"log.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.every >= 1, f"log.every must be >= 1, got {self.every}")
        if self.val_tile != "clip":
            try:
                Tile.parse(self.val_tile)
            except SvrtValueError as exc:
                raise RunConfigError(f"log.val_tile: {exc} (or 'clip')") from None


@dataclass(frozen=True)
class RunConfig:
    """A whole run: ``model``, ``data``, ``train``, ``loss``, ``log`` (module docstring)."""

    model: ModelSection
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    loss: LossConfig = LossConfig()
    log: LogConfig = LogConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML- and ``torch.load(weights_only=True)``-safe); ``from_dict`` reverses it."""
        return {"model": self.model.to_dict(), **{s: to_plain(getattr(self, s)) for s in SECTIONS[1:]}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> RunConfig:
        """Build from plain data (a resolved config, e.g. a checkpoint's), checking every key and value."""
        return _build_run(data, lambda key: source)

    def replace(self, section: str, **values: Any) -> RunConfig:
        """A copy with fields of one section changed (e.g. recorded spike statistics)."""
        if section not in SECTIONS[1:]:
            raise RunConfigError(f"RunConfig.replace: unknown section {section!r}; expected one of {SECTIONS[1:]}")
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **values)})


def _model_section(data: Any, origin: Origin) -> ModelSection:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RunConfigError(f"{origin('model')}: model must be a mapping, got {data!r}")
    fields = dict(data)
    preset = fields.pop("preset", None)
    if preset is None:
        base: dict[str, Any] = {}
    elif preset in MODEL_PRESETS:
        base = to_plain(MODEL_PRESETS[preset]())
    else:
        raise RunConfigError(
            f"{origin('model.preset')}: model.preset must be one of {', '.join(MODEL_PRESETS)} or null, got {preset!r}"
        )
    config = build(VRTSpikeConfig, deep_merge(base, fields), prefix="model", origin=origin)
    return ModelSection(preset=preset, config=config)


def _build_run(data: Mapping[str, Any], origin: Origin) -> RunConfig:
    if not isinstance(data, Mapping):
        raise RunConfigError(f"{origin('')}: a run config must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise RunConfigError(
            f"{origin(unknown[0])}: unknown key {unknown[0]!r}; valid sections: {', '.join(SECTIONS)} (and base)"
        )
    kinds = {"data": DataConfig, "train": TrainConfig, "loss": LossConfig, "log": LogConfig}
    sections = {name: build(cls, data.get(name) or {}, prefix=name, origin=origin) for name, cls in kinds.items()}
    run = RunConfig(model=_model_section(data.get("model"), origin), **sections)
    kind = run.model.config.spike_input
    if kind in BIT_INPUTS and run.data.spike_input != "raw":
        raise RunConfigError(
            f"{origin('data.spike_input')}: model.spike_input={kind!r} reads packed bits, "
            f"but data.spike_input={run.data.spike_input!r} loads voxels; set data.spike_input=raw"
        )
    return run


def preset_path(name: str) -> Path:
    """The YAML file of a shipped preset."""
    if name not in PRESETS:
        raise RunConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESET_DIR / f"{name}.yaml"


def _resolve_source(source: str | Path, relative_to: Path | None = None) -> Path:
    path = Path(source)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.is_file():
        return path
    if str(source) in PRESETS:
        return preset_path(str(source))
    raise RunConfigError(
        f"config {source!r} is neither a YAML file nor a preset; give a path to a .yaml file or one of "
        f"the presets: {', '.join(PRESETS)}"
    )


def _read_layers(source: str | Path, seen: tuple[Path, ...] = (), relative_to: Path | None = None,
                 ) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, data), ...]`` from the deepest ``base:`` to ``source`` itself."""
    path = _resolve_source(source, relative_to).resolve()
    if path in seen:
        raise RunConfigError(f"config {path}: 'base' chain loops back to itself ({' -> '.join(map(str, seen))})")
    name = f"preset {path.stem!r}" if path.parent == PRESET_DIR.resolve() else f"config {path}"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RunConfigError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RunConfigError(f"{name}: expected a mapping of sections ({', '.join(SECTIONS)}), got {data!r}")
    base = data.pop("base", None)
    layers = [] if base is None else _read_layers(base, (*seen, path), relative_to=path.parent)
    return [*layers, (name, data)]


def _flat_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        keys.append(key)
        if isinstance(v, Mapping):
            keys += _flat_keys(v, key)
    return keys


def load_run_config(source: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a run config: a YAML path or a preset name, then dotted ``key=value`` overrides in order.

    Raises:
        RunConfigError: the file is missing or not YAML; an unknown key or a wrong type (naming the key,
            the file or override it came from, and the valid keys or the expected type).
    """
    layers = _read_layers(source)
    merged: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, data in layers:
        merged = deep_merge(merged, data)
        where.update(dict.fromkeys(_flat_keys(data), name))
    top = layers[-1][0]
    applied: list[tuple[str, str]] = []
    for text in overrides:
        path, value = parse_override(text)
        set_path(merged, path, value)
        where[".".join(path)] = f"override {text!r} (on {top})"
        applied.append((".".join(path), text))

    def origin(key: str) -> str:
        # a whole section refused by its own checks: name the overrides inside it, they are the likely cause
        inside = [text for k, text in applied if key == "" or k.startswith(key + ".")]
        if inside:
            return f"{top} with override{'s' if len(inside) > 1 else ''} {', '.join(map(repr, inside))}"
        parts = key.split(".") if key else []
        for n in range(len(parts), 0, -1):
            hit = where.get(".".join(parts[:n]))
            if hit is not None:
                return hit
        return top

    return _build_run(merged, origin)
