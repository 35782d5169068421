"""Fitting engine profiles on measured serving runs and scoring them on held-out groups.

The basis of every fit is one closed-loop simulation per run with kernels only (the hybrid predictor, no
overhead, the framework's scheduler defaults): :func:`kernel_basis`. A profile is then fitted per
framework (:func:`scheduler.engine_profiles.fit_profile`) and the held-out runs are simulated again with it.

Held-out evaluation (:func:`held_out_predictions`): for every value ``g`` of a grouping column (``system``
for leave-one-GPU-out, ``model`` for leave-one-model-out) and every framework ``f`` with runs in ``g``,
the profile is fitted on ``f``'s runs outside ``g``; when fewer than :data:`MIN_FIT_ROWS` remain, on every
framework's runs outside ``g`` (``fit = "pooled"``). The held-out runs are never seen by their fit.
"""

from __future__ import annotations

import pandas as pd

from predictor.errors import InputError
from scheduler.engine_profiles import FRAMEWORKS, EngineProfile, fit_profile, kernel_only_profile
from scheduler.serving_eval import predict_serving

MIN_FIT_ROWS = 8


def kernel_basis(table: pd.DataFrame, predictor, *, with_roofline: bool = True) -> pd.DataFrame:
    """``table`` with ``kernel_ttft_ms`` / ``kernel_tpot_ms`` (kernels only) and, optionally, ``roofline_*``."""
    out = predict_serving(table, predictor=predictor, profiles={}, with_roofline=with_roofline)
    return out.rename(columns={c: "kernel_" + c[5:] for c in out.columns if c.startswith("pred_")})


def fit_profiles(basis: pd.DataFrame) -> dict[str, EngineProfile]:
    """One fitted profile per framework with enough predicted runs in ``basis``."""
    done = basis[basis["skip"] == ""]
    out = {}
    for framework in FRAMEWORKS:
        rows = done[done["framework"] == framework]
        if len(rows) >= MIN_FIT_ROWS:
            out[framework] = fit_profile(framework, rows)
    return out


def _fit_for(train: pd.DataFrame, framework: str) -> tuple[EngineProfile, str]:
    own = train[train["framework"] == framework]
    if len(own) >= MIN_FIT_ROWS:
        return fit_profile(framework, own), framework
    if len(train) < MIN_FIT_ROWS:
        raise InputError(f"fit: only {len(train)} runs outside the held-out group")
    pooled = fit_profile(framework, train, base=kernel_only_profile(framework))
    return pooled, "pooled"


def held_out_predictions(basis: pd.DataFrame, group: str, predictor) -> pd.DataFrame:
    """Predictions of every predicted run by a profile fitted without its ``group`` (see module docstring).

    Returns
    -------
    DataFrame
        The held-out runs with ``pred_ttft_ms`` / ``pred_tpot_ms``, ``fit`` (``vllm`` / ``sglang`` /
        ``trtllm``, or ``pooled``), ``fit_rows`` and the basis columns (``kernel_*``, ``roofline_*``).
    """
    done = basis[basis["skip"] == ""]
    parts = []
    for value in sorted(done[group].unique()):
        train = done[done[group] != value]
        test = done[done[group] == value]
        for framework in sorted(test["framework"].unique()):
            rows = test[test["framework"] == framework]
            try:
                profile, fit = _fit_for(train, framework)
            except InputError:
                continue
            columns = [c for c in rows.columns if not c.startswith("pred_") and c not in ("skip", "model", "gpus")]
            pred = predict_serving(rows[columns], predictor=predictor, profiles={framework: profile},
                                   with_roofline=False)
            pred = pred[pred["skip"] == ""].copy()
            pred["fit"] = fit
            pred["fit_rows"] = profile.fitted_rows
            parts.append(pred)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
