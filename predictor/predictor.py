"""The Predictor: roofline × learned residual, per op and per iteration.

``Predictor.load()`` reads the shipped artifact (verified: checksum, feature list, size);
``Predictor.roofline_only()`` predicts the ideal time itself. Both answer ``predict_ops`` (canonical
op rows) and ``predict_iteration`` (one batch, with a per-op breakdown).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.artifact import Artifact, load_artifact
from predictor.batch import from_lists
from predictor.errors import InputError
from predictor.gpus import GPUSpec, get_gpu
from predictor.models import ModelSpec, get_model
from predictor.ops import build_ops
from predictor.precision import Precision, parse_dtype


@dataclass
class IterationPrediction:
    """One iteration's predicted time and its per-op breakdown.

    Attributes
    ----------
    total_ms : float
        Predicted iteration time (Σ count × predicted_ms over ops), milliseconds.
    roofline_ms : float
        The same sum of ideal times.
    ops : DataFrame
        One row per op: ``op``, ``op_kind``, ``count``, ``bound``, ``roofline_ms`` and ``predicted_ms``
        (per call) and ``total_ms`` (count × predicted_ms).
    """

    total_ms: float
    roofline_ms: float
    ops: pd.DataFrame


class Predictor:
    """Predicts kernel and iteration times.

    Use :meth:`load` for the hybrid model or :meth:`roofline_only` for the baseline; both expose the
    same methods. A predictor is immutable after construction.
    """

    def __init__(self, artifact: Artifact | None = None):
        self.artifact = artifact
        self._booster = None
        if artifact is not None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=artifact.model_text)
            self._features = list(artifact.metadata["feature_names"])

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> Predictor:
        """The hybrid predictor from an artifact folder (default: the shipped ``artifacts/``)."""
        from features.builder import MODEL_FEATURES

        return cls(load_artifact(path, MODEL_FEATURES))

    @classmethod
    def roofline_only(cls) -> Predictor:
        """A predictor whose prediction is the roofline ideal time."""
        return cls(None)

    @property
    def is_hybrid(self) -> bool:
        return self._booster is not None

    @property
    def name(self) -> str:
        return "hybrid" if self.is_hybrid else "roofline"

    # --- per op ---------------------------------------------------------------------------------
    def predict_ops(self, ops: pd.DataFrame, gpu: GPUSpec | str | None = None) -> pd.DataFrame:
        """``roofline_ms`` and ``predicted_ms`` (per call, ms) for canonical op rows.

        Parameters
        ----------
        ops : DataFrame
            Canonical-schema rows (``measured_ms`` not needed); a ``gpu`` column unless ``gpu`` is given.
        gpu : GPUSpec or str, optional
            The GPU of every row.
        """
        from features.builder import build_features

        X, ideal = build_features(ops, gpu)
        if self._booster is None:
            predicted = ideal
        else:
            predicted = ideal * np.exp(self._booster.predict(X.loc[:, self._features], num_threads=1))
        return pd.DataFrame({"roofline_ms": ideal, "predicted_ms": predicted}, index=ops.index)

    # --- per iteration --------------------------------------------------------------------------
    def predict_iteration(
        self,
        model: str | ModelSpec,
        gpu: str | GPUSpec,
        tp: int = 1,
        dtype: str | Precision = "fp16",
        prefill: Iterable[tuple[int, int]] = (),
        decode: Iterable[int] = (),
    ) -> IterationPrediction:
        """Predicted time of one iteration with its per-op breakdown.

        Parameters
        ----------
        model, gpu : name or spec
        tp : int
            Tensor-parallel degree.
        dtype : str
            Precision preset or ``w<bits>a<bits>[kv<bits>]``.
        prefill : iterable of (new_tokens, context_len)
        decode : iterable of int
            Cached context length of each decoding sequence.
        """
        from predictor.roofline import roofline

        spec, gpu_spec, precision = get_model(model), get_gpu(gpu), parse_dtype(dtype)
        batch = from_lists(prefill, decode)
        if batch.tokens[0] == 0:
            raise InputError("batch: empty iteration; give at least one prefill chunk or decode sequence")
        ops = build_ops(spec, tp, precision, batch)
        pred = self.predict_ops(ops, gpu_spec)
        bound = roofline(ops, gpu_spec)["bound"].astype(str).to_numpy()
        table = pd.DataFrame({
            "op": ops["op"].to_numpy(), "op_kind": ops["op_kind"].to_numpy(), "count": ops["count"].to_numpy(),
            "bound": bound, "roofline_ms": pred["roofline_ms"].to_numpy(), "predicted_ms": pred["predicted_ms"].to_numpy(),
        })
        table["total_ms"] = table["count"] * table["predicted_ms"]
        return IterationPrediction(total_ms=float(table["total_ms"].sum()),
                                   roofline_ms=float((table["count"] * table["roofline_ms"]).sum()), ops=table)
