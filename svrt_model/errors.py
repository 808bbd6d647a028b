"""Errors raised by ``svrt_model``, under the project's hierarchy (:mod:`svrt_errors`)."""

from __future__ import annotations

from svrt_errors import SvrtError, SvrtValueError

__all__ = [
    "CheckpointError",
    "ModelConfigError",
    "ModelInputError",
    "RunConfigError",
    "TrainingError",
    "UntrainedSpyNetWarning",
]


class ModelConfigError(SvrtValueError):
    """A model configuration value is invalid or not supported by this implementation."""


class ModelInputError(SvrtValueError):
    """A tensor handed to a model (frames, flows, a hook's result) has the wrong shape or layout."""


class CheckpointError(SvrtValueError):
    """A checkpoint file cannot be read, or its keys/shapes do not match the model."""


class UntrainedSpyNetWarning(UserWarning):
    """Flows were computed by a SpyNet whose weights were never loaded (they start untrained)."""


class RunConfigError(SvrtValueError):
    """A training/evaluation run configuration (YAML file, preset or override) is invalid."""


class TrainingError(SvrtError):
    """Training cannot go on as asked (non-finite steps past the limit, a run directory in the way, ...)."""
