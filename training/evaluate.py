"""Held-out evaluation of the hybrid model and the baselines on the same folds, and the search.

For each fold, every method is fit on the same (balanced, capped) sample of the fold's training rows
and predicts every test row. Each split's predictions are pooled over its folds (every row is held
out once per split) and scored overall, per op kind, per GPU and per held-out group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.dataset import TrainingData, balanced_sample
from training.metrics import error_stats, grouped_stats
from training.models import CalibratedRoofline, MLOnlyModel, ResidualModel
from training.splits import Fold

METHODS = ("hybrid", "roofline", "roofline_calibrated", "ml_only")


@dataclass
class FoldPredictions:
    """Predictions (ms) of each method for one fold's test rows."""

    fold: Fold
    predictions: dict[str, np.ndarray]


def fit_predict_fold(data: TrainingData, fold: Fold, params: dict, rounds: int, max_train_rows: int,
                     seed: int) -> FoldPredictions:
    """Fit every method on the fold's training sample; predict its test rows."""
    train = balanced_sample(data.table, fold.train_idx, max_train_rows, seed)
    test = fold.test_idx
    X_train, X_test = data.X.iloc[train], data.X.iloc[test]
    ideal_test = data.ideal_ms[test]
    log_ratio = data.log_ratio
    hybrid = ResidualModel(params, rounds).fit(X_train, log_ratio[train])
    ml_only = MLOnlyModel(params, rounds).fit(X_train, data.measured_ms[train])
    kinds, gpus = data.column("op_kind"), data.column("gpu")
    calibrated = CalibratedRoofline().fit(kinds[train], gpus[train], log_ratio[train])
    return FoldPredictions(fold, {
        "hybrid": hybrid.predict_ms(X_test, ideal_test),
        "roofline": ideal_test,
        "roofline_calibrated": calibrated.predict_ms(kinds[test], gpus[test], ideal_test),
        "ml_only": ml_only.predict_ms(X_test),
    })


def pool(data: TrainingData, folds: list[FoldPredictions]) -> pd.DataFrame:
    """One row per held-out test row: identity columns, measured and each method's prediction."""
    parts = []
    for fp in folds:
        idx = fp.fold.test_idx
        t = data.table.iloc[idx]
        part = pd.DataFrame({
            "row": idx, "split": fp.fold.split, "held_out": fp.fold.held_out,
            "source": t["source"].astype(str).to_numpy(), "gpu": t["gpu"].astype(str).to_numpy(),
            "model": t["model"].astype(str).to_numpy(), "op": t["op"].astype(str).to_numpy(),
            "op_kind": t["op_kind"].astype(str).to_numpy(), "roofline_ms": data.ideal_ms[idx],
            "measured_ms": data.measured_ms[idx],
        })
        for method, pred in fp.predictions.items():
            part[method] = pred
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def split_metrics(pooled: pd.DataFrame) -> dict:
    """Per method: overall, by op kind, by op (MLA and gated delta-net apart from other attention), by GPU
    and by held-out group (APE fractions, R² log)."""
    measured = pooled["measured_ms"].to_numpy()
    groups = {"op_kind": pooled["op_kind"].to_numpy(object), "op": pooled["op"].to_numpy(object),
              "gpu": pooled["gpu"].to_numpy(object),
              "held_out": pooled["held_out"].to_numpy(object)}
    return {method: grouped_stats(pooled[method].to_numpy(), measured, groups) for method in METHODS}


def run_split(data: TrainingData, folds: list[Fold], params: dict, rounds: int, max_train_rows: int, seed: int,
              progress: Callable[[str], None] | None = None) -> tuple[dict, pd.DataFrame]:
    """Evaluate every fold of one split; return (metrics, pooled predictions)."""
    results = []
    for fold in folds:
        if progress:
            progress(f"{fold.split}: {fold.held_out}")
        results.append(fit_predict_fold(data, fold, params, rounds, max_train_rows, seed))
    pooled = pool(data, results)
    return split_metrics(pooled), pooled


def group_validation(data: TrainingData, fraction: float, seed: int) -> Fold:
    """Hold out a random ``fraction`` of shape groups (model for per-model rows, else shape family).

    Used only for the hyperparameter search, so the search rewards generalising to unseen shapes
    without choosing by any single evaluation fold.
    """
    groups = np.where(data.column("model") != "", data.column("model"), data.column("shape_family"))
    groups = np.where(groups == "", data.column("op_kind") + ":" + data.column("gpu"), groups)
    unique = np.array(sorted(set(groups.tolist())), dtype=object)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(unique, size=max(1, int(round(fraction * len(unique)))), replace=False).tolist())
    test = np.isin(groups, list(held))
    return Fold("search", "group_validation", np.flatnonzero(~test), np.flatnonzero(test))


def search(data: TrainingData, candidates: list[dict], max_train_rows: int, seed: int,
           progress: Callable[[str], None] | None = None) -> tuple[dict, list[dict]]:
    """Pick the candidate (LightGBM params + ``rounds``) with the lowest hybrid MdAPE on a group validation.

    Returns the best candidate and every candidate's score.
    """
    fold = group_validation(data, 0.2, seed)
    train = balanced_sample(data.table, fold.train_idx, max_train_rows, seed)
    valid = balanced_sample(data.table, fold.test_idx, max_train_rows // 2, seed + 1)
    scores = []
    for candidate in candidates:
        params = {k: v for k, v in candidate.items() if k != "rounds"}
        if progress:
            progress(f"search: {candidate}")
        model = ResidualModel(params, candidate["rounds"]).fit(data.X.iloc[train], data.log_ratio[train])
        pred = model.predict_ms(data.X.iloc[valid], data.ideal_ms[valid])
        scores.append({**candidate, **error_stats(pred, data.measured_ms[valid])})
    best = min(scores, key=lambda s: s["mdape"])
    return {k: best[k] for k in candidates[0]}, scores
