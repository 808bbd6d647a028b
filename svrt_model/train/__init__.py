"""Training VRT+Spike from a store: run configuration, the training loop, checkpoints and ``load_model``.

``svrt-model train CONFIG --store STORE --out RUN_DIR`` is :func:`load_run_config` + :func:`train`;
``load_model(RUN_DIR/best.pt)`` gives the trained model back with its config.
"""

from svrt_model.train.checkpoint import load_model, read_checkpoint
from svrt_model.train.config import PRESETS, RunConfig, load_run_config
from svrt_model.train.data import build_transform
from svrt_model.train.loop import TrainResult, train

__all__ = ["PRESETS", "RunConfig", "TrainResult", "build_transform", "load_model", "load_run_config",
           "read_checkpoint", "train"]
