"""Score a predictor on any canonical profile table (e.g. a user's own measurements).

``inference-sim evaluate --profiles FILE`` runs :func:`score_profiles`: hybrid and roofline-only
predictions for every valid row, and their MdAPE / p90 APE overall, per op kind and per GPU.
"""

from __future__ import annotations

import pandas as pd

from training.metrics import error_stats


def _pair(hybrid, roofline, measured) -> dict:
    h, r = error_stats(hybrid, measured), error_stats(roofline, measured)
    return {"rows": h["n"], "hybrid": {"mdape": h["mdape"], "p90_ape": h["p90_ape"]},
            "roofline": {"mdape": r["mdape"], "p90_ape": r["p90_ape"]}}


def score_profiles(table: pd.DataFrame, predictor) -> dict:
    """``{"rows", "hybrid": {"mdape", "p90_ape"}, "roofline": {…}, "by_op_kind": {…}, "by_gpu": {…}}``.

    Parameters
    ----------
    table : DataFrame
        Validated canonical rows (with ``measured_ms``).
    predictor : predictor.Predictor
        The hybrid predictor to score (its roofline times are the baseline).
    """
    pred = predictor.predict_ops(table)
    hybrid, roofline = pred["predicted_ms"].to_numpy(), pred["roofline_ms"].to_numpy()
    measured = table["measured_ms"].to_numpy(float)
    out = _pair(hybrid, roofline, measured)
    for column, key in (("op_kind", "by_op_kind"), ("gpu", "by_gpu")):
        values = table[column].astype(str).to_numpy()
        out[key] = {v: _pair(hybrid[values == v], roofline[values == v], measured[values == v])
                    for v in sorted(set(values))}
    return out
