"""Shared pieces of the AIConfigurator ingest: file descriptors, vectorised column helpers, canonical rows.

Used by :mod:`features.aic_dense` (GEMM, attention, collectives) and :mod:`features.aic_today`
(MLA, MoE, gated delta-net); the folder walk lives in :mod:`features.ingest_aiconfigurator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import IngestReport, make_rows

SOURCE = "aiconfigurator"

# Source rows kept per (table file) at most; larger tables are subsampled uniformly (seeded) so the
# shipped canonical table stays compact. Dropped rows are counted under ``subsampled``.
MAX_ROWS_PER_FILE = 12_000
SUBSAMPLE_SEED = 0


@dataclass(frozen=True)
class AicFile:
    """One parquet table: where it is, which GPU measured it, its runtime folder and version folder."""

    path: Path
    gpu: str
    runtime: str
    folder_version: str

    @property
    def framework(self) -> str:
        """``<runtime>-<version folder>``, e.g. ``vllm-0.24.0``, ``sglang-0.5.10``, ``nccl-2.27.3``."""
        return f"{self.runtime}-{self.folder_version}"


@dataclass(frozen=True)
class AicTable:
    """How to convert one table type: its required columns and its converter."""

    required: tuple[str, ...]
    convert: Callable[[pd.DataFrame, AicFile, IngestReport], pd.DataFrame]


def num(df: pd.DataFrame, col: str, default: float | None = None) -> np.ndarray:
    """Column ``col`` as float64 (``default`` everywhere when absent; NaN stays NaN)."""
    if col not in df.columns:
        return np.full(len(df), np.nan if default is None else float(default))
    return df[col].to_numpy(dtype=float, na_value=np.nan)


def text(df: pd.DataFrame, col: str, default: str = "") -> pd.Series:
    """Column ``col`` as stripped lower-case strings (``default`` when absent; missing → "")."""
    if col not in df.columns:
        return pd.Series(default, index=df.index, dtype=object)
    return df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip().str.lower()


def lookup(values: pd.Series, table: dict) -> np.ndarray:
    """Index of each value among ``table``'s keys, -1 where absent."""
    return pd.Index(list(table), dtype=object).get_indexer(values.to_numpy(dtype=object)).astype(np.int64)


def column_of(table: dict, codes: np.ndarray, position: int | None = None) -> np.ndarray:
    """``table``'s values (or element ``position`` of tuple values) picked by ``codes`` (all >= 0)."""
    values = list(table.values())
    if position is not None:
        values = [v[position] for v in values]
    return np.asarray(values, dtype=object)[codes]


def keep(df: pd.DataFrame, mask: np.ndarray, reason: str, report: IngestReport) -> pd.DataFrame:
    """Rows of ``df`` where ``mask`` holds; the others are counted under ``reason``."""
    mask = np.asarray(mask, dtype=bool)
    report.reject(reason, int((~mask).sum()))
    return df.loc[mask].reset_index(drop=True) if not mask.all() else df


def keep_known(df: pd.DataFrame, column: str, table: dict, reason: str,
               report: IngestReport, default: str = "") -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose ``column`` value is a key of ``table`` (others counted under ``reason``) and their codes."""
    codes = lookup(text(df, column, default), table)
    df = keep(df, codes >= 0, reason, report)
    return df, codes[codes >= 0]


def precision(table: dict, codes: np.ndarray) -> dict:
    """``weight_bits``, ``act_bits``, ``compute_dtype`` columns from a dtype table of (wb, ab, dtype) tuples."""
    return {"weight_bits": column_of(table, codes, 0).astype(float),
            "act_bits": column_of(table, codes, 1).astype(float),
            "compute_dtype": column_of(table, codes, 2)}


def family(prefix, **parts: np.ndarray) -> np.ndarray:
    """Shape-family strings: ``prefix`` (one string or one per row) + ``label{value}`` per part.

    Values are written as integers, e.g. ``family("gemm:", n=[4096], k=[1024])`` → ``["gemm:n4096k1024"]``.
    """
    n = len(next(iter(parts.values())))
    out = pd.Series(np.full(n, prefix, dtype=object) if isinstance(prefix, str) else np.asarray(prefix, dtype=object))
    for label, values in parts.items():
        digits = pd.Series(np.asarray(values, dtype=float)).astype("Int64").astype(str).to_numpy(object)
        out = out + label + digits
    return out.to_numpy(dtype=object)


def rows(df: pd.DataFrame, f: AicFile, shape_family, framework: str | None = None, **columns) -> pd.DataFrame:
    """Canonical rows with the identity columns every aiconfigurator row shares."""
    return make_rows(len(df), source=SOURCE, gpu=f.gpu, framework=framework or f.framework, model="", tp=1.0,
                     shape_family=shape_family, measured_ms=num(df, "latency"), **columns)


def subsample(df: pd.DataFrame, report: IngestReport, max_rows: int = MAX_ROWS_PER_FILE,
              seed: int = SUBSAMPLE_SEED) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``df``, drawn uniformly without replacement (seeded, order kept).

    The rows left out are counted under ``subsampled`` (not an error: the shipped table stays compact).
    """
    if len(df) <= max_rows:
        return df
    picked = np.sort(np.random.default_rng(seed).choice(len(df), size=max_rows, replace=False))
    report.reject("subsampled", len(df) - max_rows)
    return df.iloc[picked].reset_index(drop=True)
