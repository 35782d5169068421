"""Sibling anchoring: a run whose exact configuration was measured on another GPU borrows that measurement.

The serving calibration (:mod:`scheduler.serving_model`) predicts a run from its simulation and physical
features. When the calibration's own fit holds runs of the *same configuration* (framework, model, mode,
quantisation, parallel layout and pools, ISL, OSL, concurrency) on *other* GPUs, what the calibration got wrong
there is mostly what it gets wrong here too: the stack's behaviour on that configuration (its scheduler
settings, client, CUDA-graph sizes), which no physical feature carries. So the prediction is multiplied by the
geometric mean of measured / calibrated over those sibling runs::

    pred = calibrated × exp(mean_j log(measured_j / calibrated_j)),  j: same configuration, another GPU

The GPU's own difference is left to the calibration (its prediction for this GPU against its predictions for
the siblings). Runs on the query's own GPU never anchor it, so a GPU without measurements is predicted exactly
as it would be in use, and held-out scores (one GPU left out of the fit) measure this step honestly. A run
with no sibling is predicted by the calibration alone. Framework versions are not part of the configuration.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

POOL_FIELDS = ("num_workers", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")
KEY_COLUMNS = (("framework", "model", "mode", "gemm_quant_mode", "moe_quant_mode", "isl", "osl", "concurrency",
                "tp", "pp", "dp_attention", "moe_tp", "ep")
               + tuple(f"{role}_{f}" for role in ("prefill", "decode") for f in POOL_FIELDS))
TARGETS = ("ttft", "tpot")
PEAK_RATIO_MAX = 1.25  # dense 16-bit tensor peaks this close: one compute class (B200 to GB300 span 1.11)
HBM_RATIO_MAX = 1.5    # memory bandwidths this close (an H200 has 1.43 times an H100's)


def _text(value) -> str:
    """One key field: numbers as their shortest form (8 and 8.0 alike), text in lower case, missing as '-'."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, int | float | np.integer | np.floating):
        return f"{float(value):g}"
    return str(value).strip().lower()


def config_keys(frame: pd.DataFrame) -> pd.Series:
    """The configuration of each run as one string (:data:`KEY_COLUMNS`; absent columns read as '-').
    Aggregated runs ignore the pool columns."""
    disagg = frame["mode"].astype(str).str.lower().eq("disagg").to_numpy() if "mode" in frame else np.zeros(len(frame), bool)
    columns = []
    for name in KEY_COLUMNS:
        values = frame[name].tolist() if name in frame else [None] * len(frame)
        pooled = name.startswith(("prefill_", "decode_"))
        columns.append([_text(v) if (d or not pooled) else "-" for v, d in zip(values, disagg)])
    return pd.Series(["|".join(parts) for parts in zip(*columns)], index=frame.index, dtype=object)


def residual_table(rows: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """Per fitted run: its configuration key, GPU (``system``) and log(measured / predicted) of TTFT and TPOT
    (``predicted``: the calibration's ``ttft_ms`` / ``tpot_ms`` for ``rows``). Runs without a finite residual
    on both targets are left out."""
    out = pd.DataFrame({"key": config_keys(rows), "system": rows["system"].astype(str).str.lower()})
    for t in TARGETS:
        out[t] = np.log(rows[f"measured_{t}_ms"].to_numpy(float) / predicted[f"{t}_ms"].to_numpy(float))
    finite = np.isfinite(out[list(TARGETS)].to_numpy(float)).all(axis=1)
    return out[finite].sort_values(["key", "system"], kind="stable").reset_index(drop=True)


def siblings(a: str, b: str) -> bool:
    """Whether GPUs ``a`` and ``b`` (catalogue names or aliases) are close enough for one to anchor the other:
    different GPUs of one vendor whose dense 16-bit tensor peaks are within :data:`PEAK_RATIO_MAX` and whose HBM
    bandwidths are within :data:`HBM_RATIO_MAX` of each other (an H200 and an H100; a B200, B300, GB200 and
    GB300; not an H100 and a B200). Unknown GPUs have no siblings."""
    return _siblings(str(a).lower(), str(b).lower())


@lru_cache(maxsize=None)
def _siblings(a: str, b: str) -> bool:
    from predictor.errors import InputError
    from predictor.gpus import get_gpu
    from predictor.sibling_bounds import vendor

    try:
        x, y = get_gpu(a), get_gpu(b)
    except InputError:
        return False
    if x.name == y.name or not vendor(x) or vendor(x) != vendor(y):
        return False
    px, py = x.peak_tflops.bf16 or x.peak_tflops.fp16, y.peak_tflops.bf16 or y.peak_tflops.fp16
    if not px or not py:
        return False
    return (max(px, py) / min(px, py) <= PEAK_RATIO_MAX
            and max(x.hbm_bandwidth_gbps, y.hbm_bandwidth_gbps) / min(x.hbm_bandwidth_gbps, y.hbm_bandwidth_gbps)
            <= HBM_RATIO_MAX)


def corrections(table: pd.DataFrame | None, frame: pd.DataFrame) -> pd.DataFrame:
    """For each run of ``frame``: ``runs`` (sibling runs: same key, measured on a :func:`siblings` GPU) and the
    mean log residual of each target over them (0 where there is none)."""
    out = pd.DataFrame({"runs": 0, **{t: 0.0 for t in TARGETS}}, index=frame.index)
    if table is None or not len(table) or "system" not in frame or not len(frame):
        return out
    query = pd.DataFrame({"row": np.arange(len(frame)), "key": config_keys(frame).to_numpy(),
                          "own": frame["system"].astype(str).str.lower().to_numpy()})
    per_gpu = table.groupby(["key", "system"], sort=False)[list(TARGETS)].agg(["sum", "count"])
    per_gpu.columns = [f"{t}_{stat}" for t, stat in per_gpu.columns]
    pairs = query.merge(per_gpu.reset_index(), on="key")
    pairs = pairs[[siblings(a, b) for a, b in zip(pairs["own"], pairs["system"])]]
    if not len(pairs):
        return out
    sums = pairs.groupby("row")[[f"{t}_{stat}" for t in TARGETS for stat in ("sum", "count")]].sum()
    rows = sums.index.to_numpy()
    counts = sums["ttft_count"].to_numpy()
    out.iloc[rows, out.columns.get_loc("runs")] = counts.astype(int)
    for t in TARGETS:
        out.iloc[rows, out.columns.get_loc(t)] = sums[f"{t}_sum"].to_numpy() / counts
    return out
