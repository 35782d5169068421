"""Experiment: does bracketing an unseen GPU between its trained siblings help? (leave-one-GPU-out kernels)

Run: ``python -m benchmarks.experiments.sibling_bounds [--rows 60000]``.

For each GPU of the kernel data in turn, the residual model (the shipped artifact's parameters) is fitted on
the other GPUs' rows and predicts the held-out GPU's rows twice: as the raw model does, and bracketed by its
predictions of the same rows on the trained GPUs the held-out GPU dominates or is dominated by
(the fold's model loaded as a :class:`~predictor.predictor.Predictor` whose artifact names the fold's
training GPUs: exactly what the shipped predictor does for a GPU outside its training data). Prints, per held-out GPU, the sibling GPUs, the share of rows the raw model orders
the wrong way round (slower than on a GPU the held-out one beats on every spec, or faster than on one that beats
it), and MdAPE / p90 APE raw and bracketed, all measured in this run.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from predictor.artifact import SHIPPED_DIR, Artifact
from predictor.predictor import Predictor
from predictor.sibling_bounds import catalogue_specs, sibling_bounds
from training.dataset import balanced_sample, load_training_data
from training.metrics import error_stats
from training.models import ResidualModel
from training.splits import leave_one_gpu_out


def fold_predictor(model: ResidualModel, training_gpus) -> Predictor:
    """The :class:`Predictor` of a fold's model, as an artifact naming ``training_gpus`` would load it (none: the
    raw model, no bracketing)."""
    metadata = {"feature_names": list(model.features), "training_gpus": sorted(training_gpus)}
    return Predictor(Artifact(model.booster_.model_to_string(), metadata, SHIPPED_DIR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows per fold (balanced sample)")
    args = parser.parse_args()
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    data = load_training_data()
    print(f"leave-one-GPU-out, {args.rows} training rows per fold, the shipped artifact's parameters "
          f"({meta['num_boost_round']} rounds)")
    print(f"{'held out':>10} {'rows':>7} {'siblings (slower | faster)':>34} {'misordered':>10} "
          f"{'raw MdAPE':>9} {'p90':>6} {'bracketed MdAPE':>15} {'p90':>6}")
    pooled_raw, pooled_bracketed, pooled_measured = [], [], []
    for fold in leave_one_gpu_out(data.table):
        train = balanced_sample(data.table, fold.train_idx, args.rows, 0)
        model = ResidualModel(meta["params"], meta["num_boost_round"]).fit(data.X.iloc[train], data.log_ratio[train])
        test = data.table.iloc[fold.test_idx]
        trained = catalogue_specs(data.table["gpu"].iloc[fold.train_idx].unique())
        (spec,) = catalogue_specs([fold.held_out])
        raw = fold_predictor(model, []).predict_ops(test)["predicted_ms"].to_numpy()
        bracketed = fold_predictor(model, [g.name for g in trained]).predict_ops(test)["predicted_ms"].to_numpy()
        slower, faster = set(), set()
        for dtype in test["compute_dtype"].unique():
            s, f = sibling_bounds(spec, trained, dtype)
            slower.update(g.name for g in s)
            faster.update(g.name for g in f)
        measured = test["measured_ms"].to_numpy(float)
        before, after = error_stats(raw, measured), error_stats(bracketed, measured)
        siblings = f"{','.join(sorted(slower)) or '-'} | {','.join(sorted(faster)) or '-'}"
        print(f"{fold.held_out:>10} {len(test):>7} {siblings:>34} {np.mean(bracketed != raw):>10.1%} "
              f"{before['mdape']:>9.1%} {before['p90_ape']:>6.0%} {after['mdape']:>15.1%} {after['p90_ape']:>6.0%}")
        pooled_raw.append(raw)
        pooled_bracketed.append(bracketed)
        pooled_measured.append(measured)
    measured = np.concatenate(pooled_measured)
    before = error_stats(np.concatenate(pooled_raw), measured)
    after = error_stats(np.concatenate(pooled_bracketed), measured)
    print(f"{'pooled':>10} {len(measured):>7} {'':>34} {'':>10} {before['mdape']:>9.1%} {before['p90_ape']:>6.0%} "
          f"{after['mdape']:>15.1%} {after['p90_ape']:>6.0%}")


if __name__ == "__main__":
    main()
