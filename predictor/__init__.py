"""Roofline baseline and predictor: specs → ops → roofline (→ learned residual → iteration latency)."""

from predictor.analysis import iteration_roofline, roofline_report
from predictor.errors import InputError, ModelDoesNotFitError
from predictor.gpus import GPUSpec, get_gpu, gpu_names
from predictor.models import ModelSpec, get_model, model_names
from predictor.precision import Precision, parse_dtype

__all__ = [
    "GPUSpec", "InputError", "ModelDoesNotFitError", "ModelSpec", "Precision",
    "get_gpu", "get_model", "gpu_names", "iteration_roofline", "model_names", "parse_dtype", "roofline_report",
]
