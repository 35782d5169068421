"""Benchmark: building features for 1M canonical rows (target: under 5 s).

Run: ``python benchmarks/feature_builder.py``. Uses the shipped kernel tables (repeated to 1M rows) and
prints the time of :func:`features.builder.build_features` beside the time of the roofline alone,
both measured in this run.
"""

from __future__ import annotations

import time

import pandas as pd

from features.builder import build_features
from features.canonical import load_kernels
from predictor.roofline import roofline

N_ROWS = 1_000_000


def main() -> None:
    kernels = load_kernels()
    rows = pd.concat([kernels] * (N_ROWS // len(kernels) + 1), ignore_index=True).iloc[:N_ROWS]
    build_features(rows.iloc[:1000])  # warm-up
    t0 = time.perf_counter()
    X, _ = build_features(rows)
    feature_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    roofline(rows)
    roofline_s = time.perf_counter() - t0
    print(f"rows: {len(rows):,}; features: {X.shape[1]}")
    print(f"build_features: {feature_s:.2f} s (target < 5 s), {len(rows) / feature_s / 1e6:.2f} M rows/s")
    print(f"roofline alone: {roofline_s:.2f} s -> features cost {feature_s / roofline_s:.1f}x the roofline")


if __name__ == "__main__":
    main()
