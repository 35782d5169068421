"""Sibling anchoring: a run whose exact configuration was measured on another GPU borrows that measurement.

The serving calibration (:mod:`scheduler.serving_model`) predicts a run from its simulation and physical
features. When the calibration's anchors — measured runs kept with it (by default those of its fit; the shipped
one keeps every run of the silicon CSV) — hold runs of the *same configuration* (framework, model, mode,
quantisation, parallel layout and pools, ISL, OSL, concurrency) on *sibling* GPUs (:func:`siblings`), what the
calibration got wrong there is mostly what it gets wrong here too: the stack's behaviour on that configuration (its scheduler
settings, client, CUDA-graph sizes), which no physical feature carries. So the prediction is multiplied by the
geometric mean of measured / calibrated over those sibling runs::

    pred = calibrated × exp(mean_j log(measured_j / calibrated_j)),  j: same configuration, a sibling GPU

and kept in physical order with them: no slower than the (geometric mean) measurement on siblings its GPU
dominates on every speed spec (an H200 against an H100), no faster than on siblings that dominate it.

The GPU's own difference is left to the calibration (its prediction for this GPU against its predictions for
the siblings). Runs on the query's own GPU never anchor it, so a GPU without measurements is predicted exactly
as it would be in use, and held-out scores (one GPU left out of the fit) measure this step honestly. A run
with no sibling is predicted by the calibration alone. Framework versions are not part of the configuration.
Looser keys (the same deployment at another ISL, OSL or concurrency) and non-sibling GPUs scored worse held out.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from features.silicon import POOL_FIELDS  # the pools' columns of a measured run (batch sizes included)

KEY_COLUMNS = (("framework", "model", "mode", "gemm_quant_mode", "moe_quant_mode", "isl", "osl", "concurrency",
                "tp", "pp", "dp_attention", "moe_tp", "ep")
               + tuple(f"{role}_{f}" for role in ("prefill", "decode") for f in POOL_FIELDS))
TARGETS = ("ttft", "tpot")
PEAK_RATIO_MAX = 1.25  # dense 16-bit tensor peaks this close: one compute class (B200 to GB300 span 1.11)
HBM_RATIO_MAX = 1.5    # memory bandwidths this close (an H200 has 1.43 times an H100's)
ANCHOR_TEXT = ("key", "system", "dtype")
ANCHOR_VALUES = (*TARGETS, *(f"measured_{t}" for t in TARGETS))  # log residuals, log measured ms
ANCHOR_COLUMNS = ANCHOR_TEXT + ANCHOR_VALUES  # residual_table's


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
    """Per fitted run: its configuration key, GPU (``system``), compute dtype (``dtype``), log(measured /
    predicted) of TTFT and TPOT (``ttft``, ``tpot``; ``predicted``: the calibration's ``ttft_ms`` / ``tpot_ms``
    for ``rows``) and log measured ms (``measured_ttft``, ``measured_tpot``). Runs without finite values are
    left out."""
    out = pd.DataFrame({"key": config_keys(rows), "system": rows["system"].astype(str).str.lower(),
                        "dtype": compute_dtypes(rows)})
    for t in TARGETS:
        measured = rows[f"measured_{t}_ms"].to_numpy(float)
        out[t] = np.log(measured / predicted[f"{t}_ms"].to_numpy(float))
        out[f"measured_{t}"] = np.log(measured)
    finite = np.isfinite(out[[*TARGETS, *(f"measured_{t}" for t in TARGETS)]].to_numpy(float)).all(axis=1)
    return out[finite].sort_values(["key", "system"], kind="stable").reset_index(drop=True)


def compute_dtypes(frame: pd.DataFrame) -> np.ndarray:
    """The tensor-core type each run computes in (``fp8``, ``fp4``, ``bf16``, ...: its dtype preset's
    ``compute``), '' where the run's quantisation is unknown."""
    from predictor.errors import InputError
    from predictor.gpus import get_gpu
    from predictor.precision import parse_dtype
    from scheduler.serving_rows import Skip, row_dtype

    if any(c not in frame for c in ("gemm_quant_mode", "moe_quant_mode", "system")):
        return np.full(len(frame), "", dtype=object)
    memo: dict = {}
    out = []
    for gemm, moe, system in zip(frame["gemm_quant_mode"], frame["moe_quant_mode"], frame["system"]):
        key = (gemm, moe, system)
        if key not in memo:
            try:
                row = {"gemm_quant_mode": gemm, "moe_quant_mode": moe}
                memo[key] = parse_dtype(row_dtype(row, get_gpu(str(system)))).compute
            except (InputError, Skip):
                memo[key] = ""
        out.append(memo[key])
    return np.array(out, dtype=object)


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
    """For each run of ``frame``: ``runs`` (sibling runs: same key, measured on a :func:`siblings` GPU), the mean
    log residual of each target over them (0 where there is none), and bounds on each target's log ms from the
    siblings' measurements: ``{t}_upper`` (mean log measured on the siblings this run's GPU dominates, in the
    sense of :func:`predictor.sibling_bounds.dominates` for its compute dtype: it is no slower than there) and
    ``{t}_lower`` (on the siblings that dominate it); ±inf where there are none."""
    out = pd.DataFrame({"runs": 0, **{t: 0.0 for t in TARGETS}, **{f"{t}_upper": np.inf for t in TARGETS},
                        **{f"{t}_lower": -np.inf for t in TARGETS}}, index=frame.index)
    if table is None or not len(table) or "system" not in frame or not len(frame):
        return out
    query = pd.DataFrame({"row": np.arange(len(frame)), "key": config_keys(frame).to_numpy(),
                          "own": frame["system"].astype(str).str.lower().to_numpy(), "dtype": compute_dtypes(frame)})
    values = [*TARGETS, *(f"measured_{t}" for t in TARGETS)]
    per_gpu = table.groupby(["key", "system"], sort=False)[values].agg(["sum", "count"])
    per_gpu.columns = [f"{v}_{stat}" for v, stat in per_gpu.columns]
    pairs = query.merge(per_gpu.reset_index(), on="key")
    pairs = pairs[[siblings(a, b) for a, b in zip(pairs["own"], pairs["system"])]]
    if not len(pairs):
        return out
    sums = pairs.groupby("row")[[f"{v}_{stat}" for v in values for stat in ("sum", "count")]].sum()
    rows, counts = sums.index.to_numpy(), sums["ttft_count"].to_numpy()
    out.iloc[rows, out.columns.get_loc("runs")] = counts.astype(int)
    for t in TARGETS:
        out.iloc[rows, out.columns.get_loc(t)] = sums[f"{t}_sum"].to_numpy() / counts
    for side, faster, slower in (("upper", "own", "system"), ("lower", "system", "own")):
        keep = [_dominates(f, s, d) for f, s, d in zip(pairs[faster], pairs[slower], pairs["dtype"])]
        bounded = pairs[keep]
        if not len(bounded):
            continue
        means = bounded.groupby("row")[[f"measured_{t}_{stat}" for t in TARGETS for stat in ("sum", "count")]].sum()
        for t in TARGETS:
            out.iloc[means.index.to_numpy(), out.columns.get_loc(f"{t}_{side}")] = (
                means[f"measured_{t}_sum"].to_numpy() / means[f"measured_{t}_count"].to_numpy())
    return out


@lru_cache(maxsize=None)
def _dominates(fast: str, slow: str, dtype: str) -> bool:
    from predictor.gpus import get_gpu
    from predictor.sibling_bounds import dominates

    return bool(dtype) and dominates(get_gpu(fast), get_gpu(slow), dtype)
