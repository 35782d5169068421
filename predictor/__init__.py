"""Roofline baseline and predictor: specs → ops → roofline (→ learned residual → iteration latency).

The names below are imported on first use (PEP 562), so ``import predictor.errors`` — which the command
line needs on every run, ``--help`` included — does not pull in numpy, pandas and the op tables.
"""

from __future__ import annotations

import importlib

# public name → the submodule that defines it
_EXPORTS = {
    "iteration_roofline": "analysis", "roofline_report": "analysis",
    "InputError": "errors", "ModelDoesNotFitError": "errors",
    "GPUSpec": "gpus", "get_gpu": "gpus", "gpu_names": "gpus",
    "ModelSpec": "models", "get_model": "models", "model_names": "models",
    "Precision": "precision", "parse_dtype": "precision",
    "IterationPrediction": "predictor", "Predictor": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'predictor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"predictor.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
