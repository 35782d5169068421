"""Experiment: do the kernel families carry to a GPU they were not fitted on? (leave-one-GPU-out kernels)

Run: ``python -m benchmarks.experiments.kernel_families`` (about two minutes on 2 cores).

For each GPU whose kernels a serving runtime measured (vLLM, SGLang, TRT-LLM in aiconfigurator's tables), the
pooled residual model (the shipped artifact's parameters and training-set size) and the kernel families
(:mod:`training.kernel_families`) are both fitted without that GPU; the GPU's runtime rows (a seeded sample) are
predicted by the pooled model alone and with the row's runtime family. Prints, all measured in this run (the
computation that fits the artifact's families and records ``applied`` and ``held_out_gpu`` in its metadata):
MdAPE per runtime and op kind over the held-out GPUs and on how many GPUs the family wins, which op kinds each
family is therefore applied to, and MdAPE / p90 APE per held-out GPU and runtime with the families so applied.
"""

from __future__ import annotations

import argparse

from predictor.artifact import load_artifact
from training.dataset import load_training_data
from training.kernel_families import FAMILY_ROWS, applied_families, held_out_by_gpu, held_out_predictions


def format_kinds(predictions, applied: dict) -> str:
    """Per runtime and op kind: held-out rows, MdAPE pooled and with the family, GPUs won, applied or not."""
    lines = [f"{'runtime':>8} {'op kind':>13} {'rows':>7}  {'pooled MdAPE':>12}  {'family MdAPE':>12}  "
             f"{'GPUs won':>8}  applied"]
    for (runtime, kind), rows in predictions.groupby(["runtime", "op_kind"], sort=True):
        per_gpu = rows.groupby("gpu")[["pooled_ape", "family_ape"]].median()
        won = f"{int((per_gpu['family_ape'] < per_gpu['pooled_ape']).sum())} of {len(per_gpu)}"
        lines.append(f"{runtime:>8} {kind:>13} {len(rows):>7}  {rows['pooled_ape'].median():>12.1%}  "
                     f"{rows['family_ape'].median():>12.1%}  {won:>8}  {'yes' if kind in applied[runtime] else 'no'}")
    return "\n".join(lines)


def format_scores(scores, test_rows: int) -> str:
    """The scores of :func:`training.kernel_families.held_out_by_gpu` as a fixed-width table."""
    lines = [f"leave-one-GPU-out, pooled model and families refitted without the GPU; at most {test_rows:,} of its "
             f"runtime rows scored",
             f"{'held out':>10} {'runtime':>8} {'rows':>7}  {'pooled MdAPE':>12} {'p90':>5}  {'families MdAPE':>14} "
             f"{'p90':>5}"]
    for r in scores.itertuples():
        lines.append(f"{r.gpu:>10} {r.runtime:>8} {r.rows:>7}  {r.pooled_mdape:>12.1%} {r.pooled_p90_ape:>5.0%}  "
                     f"{r.family_mdape:>14.1%} {r.family_p90_ape:>5.0%}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-rows", type=int, default=100_000, help="held-out rows scored per GPU (sample)")
    args = parser.parse_args()
    meta = load_artifact().metadata
    params = dict(meta["params"])
    predictions = held_out_predictions(load_training_data(), params, int(meta["num_boost_round"]),
                                       int(params.get("seed", 0)), FAMILY_ROWS, args.test_rows)
    applied = applied_families(predictions)
    print(format_kinds(predictions, applied))
    print()
    print(format_scores(held_out_by_gpu(predictions, applied), args.test_rows))


if __name__ == "__main__":
    main()
