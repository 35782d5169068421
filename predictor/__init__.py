"""Roofline baseline and predictor: specs → ops → roofline (→ learned residual → iteration latency)."""

from predictor.analysis import iteration_roofline, roofline_report
from predictor.errors import InputError, ModelDoesNotFitError
from predictor.gpus import GPUSpec, get_gpu, gpu_names
from predictor.models import ModelSpec, get_model, model_names
from predictor.precision import Precision, parse_dtype
from predictor.predictor import IterationPrediction, Predictor

__all__ = [
    "GPUSpec", "InputError", "IterationPrediction", "ModelDoesNotFitError", "ModelSpec", "Precision", "Predictor",
    "get_gpu", "get_model", "gpu_names", "iteration_roofline", "model_names", "parse_dtype", "roofline_report",
]
