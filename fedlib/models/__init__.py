"""Model registry: build a model by name, find its Grad-CAM layer, count parameters."""

from fedlib.models.covidnet import PEPX, CovidNet
from fedlib.models.registry import (
    DISPLAY_NAMES,
    MODEL_NAMES,
    PAPER_MODELS,
    PUBLISHED_PARAMS,
    build_model,
    cam_layer,
    param_count,
    param_table,
)

__all__ = [
    "DISPLAY_NAMES",
    "MODEL_NAMES",
    "PAPER_MODELS",
    "PUBLISHED_PARAMS",
    "PEPX",
    "CovidNet",
    "build_model",
    "cam_layer",
    "param_count",
    "param_table",
]
