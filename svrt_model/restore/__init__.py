"""Restoring and evaluating whole sequences with VRT's published test-time tiling.

- :mod:`svrt_model.restore.tiling`: the protocol as a plan (:class:`Tile`, :data:`DEFAULT_TILE`,
  :class:`InputRules`, tile starts, blend weights, mirrored padding);
- :mod:`svrt_model.restore.restorer`: running a model over the tiles of clips and sequences
  (:func:`restore_clip`, :func:`restore_split`);
- :mod:`svrt_model.restore.evaluation`: PSNR / SSIM of a split (:func:`evaluate_split`,
  :class:`EvalReport` with its JSON contract, CSV and table).
"""

from __future__ import annotations

from svrt_model.restore.evaluation import METRIC_KEYS, EvalReport, SequenceScores, evaluate_split, score_sequence
from svrt_model.restore.restorer import (
    RestoredSequence,
    RestoreModel,
    input_rules,
    model_device,
    restore_clip,
    restore_sequences,
    restore_split,
)
from svrt_model.restore.tiling import DEFAULT_TILE, AxisPlan, InputRules, Tile, axis_plan, mirror_index, tile_starts

__all__ = [
    "DEFAULT_TILE",
    "METRIC_KEYS",
    "AxisPlan",
    "EvalReport",
    "InputRules",
    "RestoreModel",
    "RestoredSequence",
    "SequenceScores",
    "Tile",
    "axis_plan",
    "evaluate_split",
    "input_rules",
    "mirror_index",
    "model_device",
    "restore_clip",
    "restore_sequences",
    "restore_split",
    "score_sequence",
    "tile_starts",
]
