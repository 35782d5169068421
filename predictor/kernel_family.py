"""Kernel families at prediction time: a serving runtime's own kernels (see :mod:`training.kernel_families`).

An artifact may carry a second booster that corrects the pooled residual model for the runtime a simulation
serves with (``vllm``, ``sglang``, ``trtllm``): predicted log(measured / roofline) + correction, for the op kinds
the runtimes' kernel tables hold (attention, GEMM, MoE, all-reduce, linear attention); other ops are unchanged.
"""

from __future__ import annotations

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
        ``runtimes`` (name → code), ``op_kinds``.
    """

    def __init__(self, text: str, info: dict):
        self.text = text
        self.features = list(info["features"])
        self.runtimes = {str(k): int(v) for k, v in info["runtimes"].items()}
        self.op_kinds = np.asarray(sorted(info["op_kinds"]), dtype=object)
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        self._booster = None

    def code(self, framework: str) -> int | None:
        """The runtime code of ``framework`` (a canonical name), None for one without a family (``legacy``)."""
        return self.runtimes.get(framework)

    def _parsed(self):
        if self._booster is None:
            import lightgbm as lgb

            try:
                self._booster = lgb.Booster(model_str=self.text)
            except lgb.basic.LightGBMError as err:
                raise InputError(f"artifact: kernel_families.txt is not a LightGBM text model "
                                 f"({' '.join(str(err).split())[:120]})") from None
        return self._booster

    def log_correction(self, X, op_kind, code: int, num_threads: int = 1) -> np.ndarray:
        """Per row, the family's log correction for runtime ``code`` (0 for op kinds it did not learn).

        ``X`` holds the residual model's features (a DataFrame), ``op_kind`` each row's op kind.
        """
        out = np.zeros(len(X))
        learned = np.isin(np.asarray(op_kind, dtype=object), self.op_kinds)
        if learned.any():
            rows = X.loc[learned, self.features[:-1]].copy()
            rows[self.features[-1]] = code
            out[learned] = self._parsed().predict(rows, num_threads=num_threads)
        return out
