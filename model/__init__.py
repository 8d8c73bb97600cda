"""carelens model core: taxonomy, multi-task classifier, model directory, Predictor.

Never imports ``training`` or ``serving``.
"""

from __future__ import annotations

from model.backbone import DEFAULT_BACKBONE, resolve_backbone
from model.classifier import ModelConfig, MultiTaskClassifier
from model.modeling import CarelensModel, ModelLoadError
from model.ngrams import NgramConfig
from model.predictor import Evidence, Prediction, Predictor, TaskPrediction
from model.taxonomy import Label, Task, Taxonomy, TaxonomyError

__all__ = [
    "DEFAULT_BACKBONE",
    "CarelensModel",
    "Evidence",
    "Label",
    "ModelConfig",
    "ModelLoadError",
    "MultiTaskClassifier",
    "NgramConfig",
    "Prediction",
    "Predictor",
    "Task",
    "TaskPrediction",
    "Taxonomy",
    "TaxonomyError",
    "resolve_backbone",
]
