"""Experiment: should the residual model learn from every vendor's kernels, or from NVIDIA's only?

Run: ``python -m benchmarks.experiments.training_vendors [--rows 60000]`` (a few minutes on 2 cores).

The kernel data holds one Intel GPU (Arc Pro B60, vLLM on XPU) beside nine NVIDIA ones, and the residual model's
features carry no vendor. For each NVIDIA GPU in turn, the model (the shipped artifact's parameters) is fitted
on the other GPUs' rows twice — with the Intel rows and without them (:func:`training.dataset.training_vendor_rows`)
— and predicts the held-out GPU's rows as the shipped predictor would (bracketed by the fold's trained siblings).
Prints MdAPE / p90 APE per held-out GPU and pooled, both ways, measured in this run; leave-one-model-out (the
Vidur models on every GPU) likewise.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.experiments.sibling_bounds import fold_predictor
from features.canonical import load_kernels
from predictor.artifact import SHIPPED_DIR
from training.dataset import balanced_sample, engine_allreduce_rows, from_table, training_vendor_rows
from training.metrics import error_stats
from training.models import ResidualModel
from training.splits import leave_one_gpu_out, leave_one_model_out


def _scores(data, folds, nvidia: np.ndarray, rows: int, meta: dict) -> dict:
    """Held-out predictions of each fold's NVIDIA rows, trained on its other rows (all vendors, NVIDIA only)."""
    out = {"all vendors": {}, "NVIDIA only": {}}
    for fold in folds:
        test_idx = fold.test_idx[nvidia[fold.test_idx]]
        if not len(test_idx):
            continue
        test = data.table.iloc[test_idx]
        measured = test["measured_ms"].to_numpy(float)
        for name, train_idx in (("all vendors", fold.train_idx), ("NVIDIA only", fold.train_idx[nvidia[fold.train_idx]])):
            train = balanced_sample(data.table, train_idx, rows, 0)
            model = ResidualModel(meta["params"], meta["num_boost_round"]).fit(data.X.iloc[train], data.log_ratio[train])
            gpus = data.table["gpu"].iloc[train_idx].astype(str).unique()
            out[name][fold.held_out] = (fold_predictor(model, gpus).predict_ops(test)["predicted_ms"].to_numpy(), measured)
    return out


def _lines(title: str, scores: dict) -> list[str]:
    lines = [title, f"{'held out':>20} {'rows':>8} {'all vendors MdAPE':>17} {'p90':>6} {'NVIDIA only MdAPE':>17} {'p90':>6}"]
    groups = list(scores["all vendors"])
    for group in [*groups, "pooled"]:
        cells = []
        for name in ("all vendors", "NVIDIA only"):
            if group == "pooled":
                pred = np.concatenate([scores[name][g][0] for g in groups])
                measured = np.concatenate([scores[name][g][1] for g in groups])
            else:
                pred, measured = scores[name][group]
            stats = error_stats(pred, measured)
            cells.append(f"{stats['mdape']:>17.1%} {stats['p90_ape']:>6.0%}")
        lines.append(f"{group:>20} {len(measured):>8} " + " ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows per fold (balanced sample)")
    args = parser.parse_args()
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    data = from_table(engine_allreduce_rows(load_kernels()))
    nvidia = data.table.index.isin(training_vendor_rows(data.table).index)
    print(f"{args.rows} training rows per fold, the shipped artifact's parameters ({meta['num_boost_round']} rounds); "
          f"rows of other vendors: {int((~nvidia).sum()):,} ({', '.join(sorted(data.table.loc[~nvidia, 'gpu'].astype(str).unique()))})")
    print("\n".join(_lines("leave one GPU out (NVIDIA GPUs)", _scores(data, leave_one_gpu_out(data.table), nvidia,
                                                                        args.rows, meta))))
    print("\n".join(_lines("leave one model out", _scores(data, leave_one_model_out(data.table), nvidia, args.rows,
                                                           meta))))


if __name__ == "__main__":
    main()
