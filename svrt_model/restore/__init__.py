"""Restoring and evaluating whole sequences with VRT's published test-time tiling.

- :mod:`svrt_model.restore.tiling`: the protocol as a plan (:class:`Tile`, :data:`DEFAULT_TILE`,
  :class:`InputRules`, tile starts, blend weights, mirrored padding);
- :mod:`svrt_model.restore.restorer`: running a model over the tiles of clips and sequences
  (:func:`restore_clip`, :func:`restore_split`);
- :mod:`svrt_model.restore.evaluation`: PSNR / SSIM of a split (:func:`evaluate_split`,
  :class:`EvalReport` with its JSON contract, CSV and table);
- :mod:`svrt_model.restore.ensemble`: the test-time self-ensemble over flips and transpositions
  (:class:`SelfEnsemble`);
- :mod:`svrt_model.restore.raw_input`: the same from a raw dataset, voxelized on the fly (:func:`restore_raw`);
- :mod:`svrt_model.restore.png_output`: restored frames as PNG folders, written atomically
  (:func:`write_sequence_pngs`).
"""

from __future__ import annotations

from svrt_model.restore.ensemble import ENSEMBLE_VIEWS, SelfEnsemble, dihedral_views
from svrt_model.restore.evaluation import METRIC_KEYS, EvalReport, SequenceScores, evaluate_split, score_sequence
from svrt_model.restore.png_output import MANIFEST, check_destination, check_plain_name, write_sequence_pngs
from svrt_model.restore.raw_input import raw_clips, restore_raw
from svrt_model.restore.restorer import (
    RestoredSequence,
    RestoreModel,
    clip_length,
    counted,
    evaluating,
    input_rules,
    model_device,
    restore_clip,
    restore_sequences,
    restore_split,
)
from svrt_model.restore.tiling import (
    DEFAULT_TILE,
    AxisPlan,
    InputRules,
    Tile,
    axis_plan,
    mirror_index,
    tile_starts,
    with_clip_len,
)

__all__ = [
    "DEFAULT_TILE",
    "ENSEMBLE_VIEWS",
    "MANIFEST",
    "METRIC_KEYS",
    "AxisPlan",
    "EvalReport",
    "InputRules",
    "RestoreModel",
    "RestoredSequence",
    "SelfEnsemble",
    "SequenceScores",
    "Tile",
    "axis_plan",
    "check_destination",
    "check_plain_name",
    "clip_length",
    "counted",
    "dihedral_views",
    "evaluate_split",
    "evaluating",
    "input_rules",
    "mirror_index",
    "model_device",
    "raw_clips",
    "restore_clip",
    "restore_raw",
    "restore_sequences",
    "restore_split",
    "score_sequence",
    "tile_starts",
    "with_clip_len",
    "write_sequence_pngs",
]
