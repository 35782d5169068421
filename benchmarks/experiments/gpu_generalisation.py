"""Experiment: which feature sets generalise to a held-out GPU? (leave-one-GPU-out, hybrid only)

Run: ``python benchmarks/experiments/gpu_generalisation.py [--rows 60000] [--rounds 200]``.
Prints the pooled leave-one-GPU-out MdAPE per held-out GPU for each feature-set variant, and the
leave-one-model-out MdAPE for the same variants, all measured in this run.
"""

from __future__ import annotations

import argparse

import numpy as np

from features.builder import FEATURE_NAMES, HARDWARE_FEATURES
from training.dataset import balanced_sample, load_training_data
from training.metrics import error_stats
from training.models import ResidualModel
from training.splits import leave_one_gpu_out, leave_one_model_out

NO_SPECS_BUT_LINK = tuple(f for f in FEATURE_NAMES if f not in HARDWARE_FEATURES or f in ("link_gbps", "link_latency_us"))
BASE = {"num_leaves": 127, "learning_rate": 0.1, "min_data_in_leaf": 20}
# name -> (features, extra LightGBM params)
VARIANTS = {
    "all features": (FEATURE_NAMES, {}),
    "no raw GPU specs": (tuple(f for f in FEATURE_NAMES if f not in HARDWARE_FEATURES), {}),
    "no raw GPU specs but link": (NO_SPECS_BUT_LINK, {}),
    "…+ monotone in roofline time": (NO_SPECS_BUT_LINK, {"monotone_constraints": [
        -1 if f == "log_ideal_ms" else 0 for f in NO_SPECS_BUT_LINK], "monotone_constraints_method": "advanced"}),
    "…+ strong regularisation": (NO_SPECS_BUT_LINK, {"num_leaves": 31, "min_data_in_leaf": 200,
                                                      "feature_fraction": 0.7, "lambda_l2": 10.0}),
    "…+ monotone + regularisation": (NO_SPECS_BUT_LINK, {
        "monotone_constraints": [-1 if f == "log_ideal_ms" else 0 for f in NO_SPECS_BUT_LINK],
        "monotone_constraints_method": "advanced", "num_leaves": 63, "min_data_in_leaf": 100,
        "feature_fraction": 0.8, "lambda_l2": 10.0}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--only", nargs="*", help="variant names to run")
    parser.add_argument("--splits", nargs="*", default=["leave_one_gpu_out", "leave_one_model_out"])
    args = parser.parse_args()
    data = load_training_data()
    for split_name, folds in (("leave_one_gpu_out", leave_one_gpu_out(data.table)),
                              ("leave_one_model_out", leave_one_model_out(data.table))):
        if split_name not in args.splits:
            continue
        print(f"== {split_name}")
        for name, (features, extra) in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            params = {**BASE, **extra}
            preds, meas, per = [], [], {}
            for fold in folds:
                train = balanced_sample(data.table, fold.train_idx, args.rows, 0)
                model = ResidualModel(params, args.rounds, features).fit(data.X.iloc[train], data.log_ratio[train])
                p = model.predict_ms(data.X.iloc[fold.test_idx], data.ideal_ms[fold.test_idx])
                preds.append(p)
                meas.append(data.measured_ms[fold.test_idx])
                per[fold.held_out] = error_stats(p, meas[-1])["mdape"]
            overall = error_stats(np.concatenate(preds), np.concatenate(meas))
            detail = " ".join(f"{k}={v:.3f}" for k, v in per.items())
            print(f"  {name:28s} MdAPE {overall['mdape']:.3f} p90 {overall['p90_ape']:.2f} | {detail}")


if __name__ == "__main__":
    main()
