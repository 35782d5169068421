"""The hybrid residual model and the baselines it is judged against.

* :class:`ResidualModel` — LightGBM on :data:`features.builder.MODEL_FEATURES`, target
  log(measured / roofline), constrained to be non-increasing in the roofline time (at a fixed shape and
  efficiency, a longer ideal time makes the fixed per-call overhead a smaller share); predicts
  roofline × exp(model). The product.
* roofline only — the ideal time itself (no fitting).
* :class:`CalibratedRoofline` — roofline × one efficiency constant per (op kind, GPU), the median
  measured/roofline ratio on the training rows (the calibrated-roofline approach of several peers);
  an (op kind, GPU) pair unseen in training falls back to the op kind's constant over all GPUs,
  then to the global constant.
* :class:`MLOnlyModel` — LightGBM without any roofline feature (shapes, GPU specs, precision, tiling),
  target log(measured time): the Roofline-LLM comparison.

All follow scikit-learn's life cycle: plain parameters in ``__init__``, learning in ``fit``,
learned state in attributes ending in ``_``. LightGBM runs deterministically (fixed seed, thread
count and column-wise histograms).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.builder import CATEGORICAL_FEATURES, FEATURE_NAMES, MODEL_FEATURES, ROOFLINE_FEATURES
from features.runtimes import RUNTIME_FEATURE

DEFAULT_PARAMS = {
    "objective": "l2",
    "learning_rate": 0.1,
    "num_leaves": 127,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "max_bin": 255,
    "seed": 0,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
DEFAULT_ROUNDS = 300
ML_ONLY_FEATURES = tuple(f for f in FEATURE_NAMES if f not in ROOFLINE_FEATURES)


MONOTONE_DECREASING = ("log_ideal_ms",)


class _Booster:
    """LightGBM regressor on a fixed feature list (native API, deterministic)."""

    def __init__(self, params: dict | None = None, num_boost_round: int = DEFAULT_ROUNDS,
                 features: tuple[str, ...] = FEATURE_NAMES, monotone_decreasing: tuple[str, ...] = ()):
        self.params = params
        self.num_boost_round = num_boost_round
        self.features = features
        self.monotone_decreasing = monotone_decreasing

    def _lgb_params(self) -> dict:
        """LightGBM parameters: the defaults, one thread per CPU this process may use (a machine setting, not a
        hyperparameter: ``deterministic`` keeps results equal across thread counts), then ``params``."""
        from predictor.cpus import available_cpus

        return {**DEFAULT_PARAMS, "num_threads": available_cpus(), **(self.params or {})}

    def _fit_target(self, X: pd.DataFrame, y: np.ndarray):
        import lightgbm as lgb

        params = self._lgb_params()
        if self.monotone_decreasing:
            params["monotone_constraints"] = [-1 if f in self.monotone_decreasing else 0 for f in self.features]
            params["monotone_constraints_method"] = "advanced"
        cats = [c for c in (*CATEGORICAL_FEATURES, RUNTIME_FEATURE) if c in self.features]
        dataset = lgb.Dataset(X.loc[:, list(self.features)], label=np.asarray(y, dtype=float),
                              categorical_feature=cats, free_raw_data=True)
        self.booster_ = lgb.train(params, dataset, num_boost_round=self.num_boost_round)
        return self

    def _predict_target(self, X: pd.DataFrame) -> np.ndarray:
        threads = int(self._lgb_params()["num_threads"])
        return self.booster_.predict(X.loc[:, list(self.features)], num_threads=threads)


class ResidualModel(_Booster):
    """Hybrid model: LightGBM learns log(measured / roofline) from the features (default: all).

    Examples
    --------
    >>> model = ResidualModel(num_boost_round=50).fit(X_train, log_ratio_train)   # doctest: +SKIP
    >>> predicted_ms = model.predict_ms(X_test, roofline_ms_test)                  # doctest: +SKIP
    """

    def __init__(self, params: dict | None = None, num_boost_round: int = DEFAULT_ROUNDS,
                 features: tuple[str, ...] = MODEL_FEATURES, monotone_decreasing: tuple[str, ...] = MONOTONE_DECREASING):
        super().__init__(params, num_boost_round, features, monotone_decreasing)

    def fit(self, X: pd.DataFrame, log_ratio: np.ndarray) -> ResidualModel:
        return self._fit_target(X, log_ratio)

    def predict_log_ratio(self, X: pd.DataFrame) -> np.ndarray:
        return self._predict_target(X)

    def predict_ms(self, X: pd.DataFrame, roofline_ms: np.ndarray) -> np.ndarray:
        """Predicted time (ms): roofline × exp(predicted log ratio)."""
        return np.asarray(roofline_ms, dtype=float) * np.exp(self.predict_log_ratio(X))


class MLOnlyModel(_Booster):
    """LightGBM on shapes, GPU specs, precision and tiling (no roofline terms), target log time."""

    def __init__(self, params: dict | None = None, num_boost_round: int = DEFAULT_ROUNDS):
        super().__init__(params, num_boost_round, ML_ONLY_FEATURES)

    def fit(self, X: pd.DataFrame, measured_ms: np.ndarray) -> MLOnlyModel:
        return self._fit_target(X, np.log(np.asarray(measured_ms, dtype=float)))

    def predict_ms(self, X: pd.DataFrame) -> np.ndarray:
        return np.exp(self._predict_target(X))


class CalibratedRoofline:
    """Roofline × a fitted efficiency constant per (op kind, GPU)."""

    def fit(self, op_kind: np.ndarray, gpu: np.ndarray, log_ratio: np.ndarray) -> CalibratedRoofline:
        df = pd.DataFrame({"key": self._keys(op_kind, gpu), "op_kind": op_kind, "r": log_ratio})
        self.by_kind_gpu_ = df.groupby("key")["r"].median().to_dict()
        self.by_kind_ = df.groupby("op_kind")["r"].median().to_dict()
        self.global_ = float(np.median(log_ratio)) if len(log_ratio) else 0.0
        return self

    @staticmethod
    def _keys(op_kind, gpu) -> pd.Series:
        return pd.Series(op_kind, dtype=object).astype(str) + "|" + pd.Series(gpu, dtype=object).astype(str)

    def predict_log_ratio(self, op_kind: np.ndarray, gpu: np.ndarray) -> np.ndarray:
        """Median log ratio of the row's (op kind, GPU); else of its op kind; else global."""
        exact = self._keys(op_kind, gpu).map(self.by_kind_gpu_)
        by_kind = pd.Series(op_kind, dtype=object).map(self.by_kind_)
        return exact.fillna(by_kind).fillna(self.global_).to_numpy(float)

    def predict_ms(self, op_kind: np.ndarray, gpu: np.ndarray, roofline_ms: np.ndarray) -> np.ndarray:
        return np.asarray(roofline_ms, dtype=float) * np.exp(self.predict_log_ratio(op_kind, gpu))
