"""Kernel families at prediction time: a serving runtime's own kernels (see :mod:`training.kernel_families`).

An artifact may carry a second booster that corrects the pooled residual model for the runtime a simulation
serves with (``vllm``, ``sglang``, ``trtllm``): predicted log(measured / roofline) + correction, for the op kinds
the artifact applies that runtime's family to (its ``applied`` entry: the op kinds where the family beat the pooled
model on held-out GPUs' kernels; every learned op kind for an artifact without it); other ops are unchanged.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from predictor.errors import InputError


class KernelFamilies:
    """The family booster of an artifact (parsed on first use) and what it was fitted on.

    Parameters
    ----------
    text : str
        LightGBM text model.
    info : dict
        The metadata's ``kernel_families`` entry: ``features`` (in order; the last is the runtime code),
        ``runtimes`` (name → code), ``op_kinds`` (learned), optionally ``applied`` (runtime → op kinds).
    """

    def __init__(self, text: str, info: dict):
        self.text = text
        self.features = list(info["features"])
        self.runtimes = {str(k): int(v) for k, v in info["runtimes"].items()}
        applied = info.get("applied", {name: info["op_kinds"] for name in self.runtimes})
        self.applied = {name: np.asarray(sorted(applied.get(name, [])), dtype=object) for name in self.runtimes}
        self._booster = None

    @functools.cached_property
    def digest(self) -> str:
        """A short SHA-256 of the booster text (part of a framework view's table-cache key)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def applies(self, framework: str | None) -> bool:
        """Whether ``framework`` (a canonical name) has a family applied to some op kind (not ``legacy``, nor a
        runtime whose family beat the pooled model nowhere)."""
        return len(self.applied.get(framework, ())) > 0

    def _parsed(self):
        if self._booster is None:
            import lightgbm as lgb

            try:
                self._booster = lgb.Booster(model_str=self.text)
            except lgb.basic.LightGBMError as err:
                raise InputError(f"artifact: kernel_families.txt is not a LightGBM text model "
                                 f"({' '.join(str(err).split())[:120]})") from None
        return self._booster

    def log_correction(self, X, op_kind, framework: str, num_threads: int = 1) -> np.ndarray:
        """Per row, the log correction of ``framework``'s family (0 for op kinds it is not applied to).

        ``X`` holds the residual model's features (a DataFrame), ``op_kind`` each row's op kind.
        """
        out = np.zeros(len(X))
        learned = np.isin(np.asarray(op_kind, dtype=object), self.applied[framework])
        if learned.any():
            rows = X.loc[learned, self.features[:-1]].copy()
            rows[self.features[-1]] = self.runtimes[framework]
            out[learned] = self._parsed().predict(rows, num_threads=num_threads)
        return out
