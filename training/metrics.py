"""Error statistics: absolute percentage error (APE) medians and tails, and R² in log space."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def ape(predicted, measured) -> np.ndarray:
    """|predicted − measured| / measured, elementwise (a fraction, not percent)."""
    predicted = np.asarray(predicted, dtype=float)
    measured = np.asarray(measured, dtype=float)
    return np.abs(predicted - measured) / measured


def error_stats(predicted, measured) -> dict[str, float]:
    """MdAPE, p90 APE and mean APE (fractions), R² of log predictions, and the row count."""
    predicted = np.asarray(predicted, dtype=float)
    measured = np.asarray(measured, dtype=float)
    if measured.size == 0:
        return {"n": 0, "mdape": float("nan"), "p90_ape": float("nan"), "mean_ape": float("nan"), "r2_log": float("nan")}
    e = ape(predicted, measured)
    lp, lm = np.log(predicted), np.log(measured)
    ss_res = float(np.sum((lm - lp) ** 2))
    ss_tot = float(np.sum((lm - lm.mean()) ** 2))
    return {
        "n": int(measured.size),
        "mdape": float(np.median(e)),
        "p90_ape": float(np.quantile(e, 0.9)),
        "mean_ape": float(np.mean(e)),
        "r2_log": float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan"),
    }


def grouped_stats(predicted, measured, groups: Mapping[str, np.ndarray]) -> dict:
    """``{"overall": stats, "by_<name>": {value: stats}}`` for each grouping array in ``groups``."""
    predicted = np.asarray(predicted, dtype=float)
    measured = np.asarray(measured, dtype=float)
    out = {"overall": error_stats(predicted, measured)}
    for name, values in groups.items():
        values = np.asarray(values, dtype=object)
        out[f"by_{name}"] = {
            str(v): error_stats(predicted[values == v], measured[values == v]) for v in sorted(set(values.tolist()))
        }
    return out
