"""The canonical kernel-profile table: one row per measured kernel call, and its validation.

Every source (Vidur, aiconfigurator, synthetic, a user's own measurements) is converted to this
table, so one shape-level model trains on all of them and an unseen model is just new shapes.

Columns
-------
Identity (strings):
    ``source``        where the row comes from: vidur, aiconfigurator, synthetic, user, ...
    ``gpu``           catalogue GPU name (``predictor/catalog/gpus.yaml``)
    ``framework``     runtime that measured it, e.g. ``sarathi-serve``, ``vllm-0.14.0``, ``nccl-2.27.3``
    ``model``         catalogue model whose shapes the row came from; ``""`` for model-agnostic sweeps
    ``shape_family``  group key for model-agnostic rows (e.g. a GEMM's (n, k)); ``""`` otherwise
    ``op``            fine op name (``qkv_proj``, ``attn_decode``, ``allreduce``, ...)
    ``op_kind``       one of :data:`predictor.opcost.OP_KINDS`
    ``compute_dtype`` tensor-core path: fp16, bf16, fp8, int8
Numbers (float64):
    ``tp``            tensor-parallel shard divisor the shapes were cut with (1 for agnostic rows)
    shape and precision columns of :data:`predictor.opcost.SHAPE_DEFAULTS` (per-GPU shard sizes)
    ``measured_ms``   measured time of one call, milliseconds (> 0, finite)

Validation (:func:`validate`) drops bad rows and counts them per reason; :func:`check_columns`
raises a one-line :class:`~predictor.errors.InputError` naming the file and column for structural
problems (missing column, wrong dtype, units that cannot be right).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from predictor import opcost as oc
from predictor.errors import InputError
from predictor.gpus import COMPUTE_DTYPES, catalogue, gpu_names

STRING_COLUMNS = ("source", "gpu", "framework", "model", "shape_family", "op", "op_kind", "compute_dtype")
NUMERIC_COLUMNS = ("tp", *oc.SHAPE_DEFAULTS)
TARGET = "measured_ms"
COLUMNS = (*STRING_COLUMNS, *NUMERIC_COLUMNS, TARGET)

# Shape columns that must be > 0 for each op kind to describe a real kernel call.
REQUIRED_SHAPES = {
    oc.GEMM: ("m", "n", "k"),
    oc.ATTN_PREFILL: ("batch", "q_tokens", "kv_len", "heads", "kv_heads", "head_dim"),
    oc.ATTN_DECODE: ("batch", "kv_len", "heads", "kv_heads", "head_dim"),
    oc.MOE: ("m", "n", "k", "experts", "experts_local", "topk"),
    oc.EMBEDDING: ("m", "n"),
    oc.ALLREDUCE: ("msg_bytes",),
    oc.ALLGATHER: ("msg_bytes",),
    oc.ALLTOALL: ("msg_bytes",),
    oc.P2P: ("msg_bytes",),
    oc.LINEAR_ATTN: ("batch", "q_tokens", "heads", "head_dim"),
    **{kind: ("m", "n") for kind in oc.ELEMENTWISE_KINDS},
}

# A measurement this many times faster than the roofline allows is physically implausible
# (even a fully L2-resident kernel is bounded by L2 bandwidth, a few times HBM's).
MIN_RATIO_TO_ROOFLINE = 0.1


@dataclass
class IngestReport:
    """Rows kept and rejected (per reason) while building a canonical table."""

    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    merged_duplicates: int = 0

    def reject(self, reason: str, count: int) -> None:
        if count:
            self.rejected[reason] += int(count)

    def merge(self, other: IngestReport) -> IngestReport:
        out = IngestReport(self.kept + other.kept, self.rejected + other.rejected,
                           self.merged_duplicates + other.merged_duplicates)
        return out

    def to_dict(self) -> dict:
        return {"kept": self.kept, "merged_duplicates": self.merged_duplicates,
                "rejected": dict(sorted(self.rejected.items()))}


def empty_frame() -> pd.DataFrame:
    """A canonical table with no rows (and every column)."""
    data = {c: pd.Series([], dtype=str) for c in STRING_COLUMNS}
    data.update({c: pd.Series([], dtype=float) for c in (*NUMERIC_COLUMNS, TARGET)})
    return pd.DataFrame(data)


def make_rows(n_rows: int, /, **columns) -> pd.DataFrame:
    """Build ``n_rows`` canonical rows from scalars or arrays; absent columns get their defaults.

    ``n_rows`` is positional-only, so a shape column named ``n`` can be passed by keyword.
    """
    n = n_rows
    data = {}
    for c in STRING_COLUMNS:
        value = columns.pop(c, "")
        data[c] = np.asarray(value, dtype=object) if np.ndim(value) else np.full(n, value, dtype=object)
    defaults = {"tp": 1.0, **oc.SHAPE_DEFAULTS, TARGET: np.nan}
    for c, default in defaults.items():
        value = columns.pop(c, default)
        data[c] = np.asarray(value, dtype=float) if np.ndim(value) else np.full(n, float(value))
    if columns:
        raise TypeError(f"unknown canonical column(s): {sorted(columns)}")
    return pd.DataFrame(data)


# Shape columns added after tables were first written: a table without them means their defaults.
LATER_COLUMNS = ("v_head_dim", "latent_kv", "window", "routing_skew")


def add_later_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every :data:`LATER_COLUMNS` column present (absent ones take their default)."""
    missing = {c: oc.SHAPE_DEFAULTS[c] for c in LATER_COLUMNS if c not in df.columns}
    return df.assign(**missing) if missing else df


def check_columns(df: pd.DataFrame, source: str) -> None:
    """Raise a one-line :class:`InputError` naming ``source`` and the column for structural problems."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing column {missing[0]!r} (canonical columns: {', '.join(COLUMNS)})")
    for c in (*NUMERIC_COLUMNS, TARGET):
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            raise InputError(f"{source}: column {c!r} must be numeric, got {df[c].dtype}")


def validate(df: pd.DataFrame, source: str = "canonical table",
             report: IngestReport | None = None) -> tuple[pd.DataFrame, IngestReport]:
    """Drop invalid rows, average duplicate keys, and report what was dropped.

    Row-level reasons: ``unknown_op_kind``, ``unknown_gpu``, ``unknown_compute_dtype``, ``dtype_not_native``
    (fp4 compute on a GPU without an fp4 peak in the catalogue),
    ``nan_or_negative_time``, ``nonpositive_shape``, ``invalid_number`` (NaN/negative shape or
    precision values), ``faster_than_roofline`` (measured below :data:`MIN_RATIO_TO_ROOFLINE` × the
    roofline: corrupt or mis-scaled). Rows with the same key (every column but ``measured_ms``) are
    averaged (repeated measurements); the count is in ``merged_duplicates``.

    Raises
    ------
    InputError
        Structural problems, or when most rows are faster than the roofline (units off by 1000×?).
    """
    report = report or IngestReport()
    check_columns(df, source)
    df = df.loc[:, list(COLUMNS)].copy()
    for c in STRING_COLUMNS:
        df[c] = df[c].fillna("").astype(str)
    keep = np.ones(len(df), dtype=bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal keep
        hit = keep & mask
        report.reject(reason, hit.sum())
        keep &= ~mask

    drop(~df["op_kind"].isin(oc.OP_KINDS).to_numpy(), "unknown_op_kind")
    drop(~df["gpu"].isin(gpu_names()).to_numpy(), "unknown_gpu")
    drop(~df["compute_dtype"].isin(COMPUTE_DTYPES).to_numpy(), "unknown_compute_dtype")
    fp4_gpus = sorted(name for name, spec in catalogue().items() if spec.peak_tflops.fp4 is not None)
    drop(((df["compute_dtype"] == "fp4") & ~df["gpu"].isin(fp4_gpus)).to_numpy(), "dtype_not_native")
    t = df[TARGET].to_numpy(float)
    drop(~np.isfinite(t) | (t <= 0), "nan_or_negative_time")
    numbers = df[list(NUMERIC_COLUMNS)].drop(columns=["attn_pairs", "score_elements"]).to_numpy(float)
    drop(~np.isfinite(numbers).all(axis=1) | (numbers < 0).any(axis=1), "invalid_number")
    kinds = df["op_kind"].to_numpy(object)
    bad_shape = np.zeros(len(df), dtype=bool)
    for kind, cols in REQUIRED_SHAPES.items():
        sel = kinds == kind
        if sel.any():
            bad_shape[sel] = (df.loc[sel, list(cols)].to_numpy(float) <= 0).any(axis=1)
    collective = np.isin(kinds, oc.COLLECTIVE_KINDS)
    bad_shape |= collective & (df["world_size"].to_numpy(float) < 2)
    drop(bad_shape, "nonpositive_shape")
    df = df.loc[keep].reset_index(drop=True)

    if len(df):
        from predictor.roofline import roofline

        ideal = roofline(df)["ideal_ms"].to_numpy()
        ratio = df[TARGET].to_numpy() / ideal
        too_fast = ratio < MIN_RATIO_TO_ROOFLINE
        if too_fast.mean() > 0.5:
            raise InputError(
                f"{source}: column {TARGET!r}: {too_fast.mean():.0%} of rows are over "
                f"{1 / MIN_RATIO_TO_ROOFLINE:.0f}x faster than the roofline allows; are the times in seconds or "
                f"microseconds instead of milliseconds?"
            )
        report.reject("faster_than_roofline", too_fast.sum())
        df = df.loc[~too_fast].reset_index(drop=True)

    key = [c for c in COLUMNS if c != TARGET]
    before = len(df)
    if df.duplicated(key).any():  # else the merge is the identity (a check is several times faster than a groupby)
        df = df.groupby(key, sort=False, dropna=False, as_index=False)[TARGET].mean()
    else:
        df = df.reset_index(drop=True)
    report.merged_duplicates += before - len(df)
    df = df.loc[:, list(COLUMNS)]
    report.kept += len(df)
    return df, report
