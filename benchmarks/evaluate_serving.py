"""Benchmark ``evaluate --serving``: measured serving runs scored per wall second.

Run: ``python -m benchmarks.evaluate_serving [--serving PATH] [--rows 1000] [--n-jobs 2]``. Takes the
first ``--rows`` runs of the silicon CSV that the catalogue can load (cycling through them when there are
fewer), simulates each closed-loop as ``inference-sim evaluate --serving`` does (hybrid kernels only, corrected by
the shipped serving calibration; roofline-only; and, for an aggregated run no sibling GPU anchors, with its framework's engine profile,
whose TTFT the calibration's blends with), and prints rows per second, end to end including predictor loading and table building, and the time per
row. Goal of issue 17: 1,000 rows in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from features.silicon import read_serving_results
from scheduler.serving_eval import predict_serving
from scheduler.serving_rows import Skip, resolve_model, row_dtype
from scheduler.serving_model import ServingCalibration

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aiconfigurator" / \
    "silicon_sample_without_h200.csv"


def loadable(table: pd.DataFrame) -> pd.DataFrame:
    keep = []
    for _, row in table.iterrows():
        try:
            resolve_model(row["model_path"])
            row_dtype(row)
            keep.append(True)
        except Skip:
            keep.append(False)
    return table[keep]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serving", default=str(DEFAULT_CSV))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    table = loadable(read_serving_results(args.serving))
    rows = table.iloc[[i % len(table) for i in range(args.rows)]].copy()
    rows["id"] = [f"{i}:{x}" for i, x in enumerate(rows["id"])]
    t = time.perf_counter()
    out = predict_serving(rows, n_jobs=args.n_jobs, calibration=ServingCalibration.load())
    wall = time.perf_counter() - t
    done = int((out["skip"] == "").sum())
    print(f"{len(rows):,} rows ({done:,} predicted, {len(table):,} distinct loadable runs) in {wall:.1f} s with "
          f"n_jobs={args.n_jobs}: {len(rows) / wall:.1f} rows/s, {1e3 * wall / len(rows):.0f} ms per row")


if __name__ == "__main__":
    main()
