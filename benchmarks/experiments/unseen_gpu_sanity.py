"""Experiment: does ``evaluate --serving`` order an unseen GPU physically against the GPU it resembles?

Run: ``python -m benchmarks.experiments.unseen_gpu_sanity [--serving PATH] [--source h100_sxm] [--target h200_sxm]
[--per-framework 60] [--seed 1]``.

The silicon CSV has no H200 runs, and the kernel tables have no H200. This takes up to ``--per-framework`` measured
runs of ``--source`` per framework (a seeded sample), relabels them as ``--target`` and predicts both versions with
the shipped serving calibration, as ``inference-sim evaluate --serving`` does. It prints, per framework and
overall, the 10th, 50th and 90th percentiles of predicted-target / predicted-source, of predicted-target /
measured-source and of predicted-target without the source's measurements / predicted-source, for TTFT and TPOT.

A relabelled run is anchored to its own measurement on the source (a sibling GPU), and kept no slower than it when
the target dominates the source on every speed spec (an H200 against an H100): predicted-target / measured-source
is then at most 1, and its size is the calibration's view of the target's speed-up. The source's own runs are
never anchored to themselves, so predicted-target / predicted-source also carries the calibration's error on the
source. The third ratio of each metric ("unmeasured") predicts the relabelled runs as configurations never
measured on the source (the calibration's anchors on it left out): no anchor, so the run is kept no slower than
the calibration's prediction of it on the source, which its target dominates (``scheduler.serving_bounds``; TTFT
before the blend with the engine-profile simulation). This is a sanity check of direction and size, not an
accuracy score: nothing here was measured on the target.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.silicon import read_serving_results
from scheduler.serving_eval import predict_serving
from scheduler.serving_model import ServingCalibration

DEFAULT_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aiconfigurator" / \
    "silicon_sample_without_h200.csv"


def _percentiles(ratio: pd.Series) -> str:
    values = ratio.to_numpy(float)
    values = values[np.isfinite(values)]
    if not len(values):
        return "—"
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return f"{p50:.2f} ({p10:.2f}–{p90:.2f})"


def sanity_lines(runs: pd.DataFrame, calibration: ServingCalibration, source: str = "h100_sxm",
                 target: str = "h200_sxm", per_framework: int = 60, seed: int = 1, n_jobs: int = 2,
                 profiles: dict | None = None) -> list[str]:
    """The check's table as Markdown lines (see the module docstring) for the measured ``runs`` (silicon schema);
    none when ``runs`` holds no run on ``source``. ``profiles``: the engine profiles the calibration's TTFT blends
    with (default: the shipped ones)."""
    runs = runs[runs["system"].astype(str).str.lower() == source]
    if runs.empty:
        return []
    chosen = [g.sample(min(len(g), per_framework), random_state=seed).index for _, g in runs.groupby("framework")]
    picked = runs.loc[sorted(i for index in chosen for i in index)]
    predicted_source = predict_serving(picked, n_jobs=n_jobs, calibration=calibration,
                                       profiles=profiles).set_index("id")
    predicted_target = predict_serving(picked.assign(system=target), n_jobs=n_jobs, calibration=calibration,
                                       profiles=profiles).set_index("id")
    # as a configuration never measured on the source: no anchor, the dominance bound (scheduler.serving_bounds)
    unmeasured = replace(calibration, anchors=None if calibration.anchors is None else
                         calibration.anchors[calibration.anchors["system"] != source])
    predicted_open = predict_serving(picked.assign(system=target), n_jobs=n_jobs, calibration=unmeasured,
                                     profiles=profiles).set_index("id")
    both = (predicted_source["skip"] == "") & (predicted_target["skip"] == "") & (predicted_open["skip"] == "")
    lines = [f"{len(picked):,} runs of {source} (at most {per_framework} per framework, seed {seed}) relabelled "
             f"{target}; {int(both.sum()):,} predicted as both. Median (10th–90th percentile) of each ratio:", "",
             f"| framework | runs | TTFT {target}/{source} predicted | TTFT {target} predicted / {source} measured | "
             f"TTFT {target}/{source} predicted, unmeasured | TPOT {target}/{source} predicted | "
             f"TPOT {target} predicted / {source} measured | TPOT {target}/{source} predicted, unmeasured |",
             "|---|---|---|---|---|---|---|---|"]
    for name in [*sorted(predicted_source.loc[both, "framework"].unique()), "all"]:
        keep = both & ((predicted_source["framework"] == name) if name != "all" else True)
        cells = []
        for metric in ("ttft", "tpot"):
            ahead = predicted_target.loc[keep, f"pred_{metric}_ms"]
            cells += [_percentiles(ahead / predicted_source.loc[keep, f"pred_{metric}_ms"]),
                      _percentiles(ahead / predicted_source.loc[keep, f"measured_{metric}_ms"]),
                      _percentiles(predicted_open.loc[keep, f"pred_{metric}_ms"]
                                   / predicted_source.loc[keep, f"pred_{metric}_ms"])]
        lines.append(f"| {name} | {int(keep.sum()):,} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving", default=str(DEFAULT_CSV))
    parser.add_argument("--source", default="h100_sxm", help="GPU whose measured runs are relabelled")
    parser.add_argument("--target", default="h200_sxm", help="GPU they are relabelled as")
    parser.add_argument("--per-framework", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    lines = sanity_lines(read_serving_results(args.serving), ServingCalibration.load(), args.source, args.target,
                         args.per_framework, args.seed, args.n_jobs)
    if not lines:
        raise SystemExit(f"--source: no runs on {args.source!r} in {args.serving}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
