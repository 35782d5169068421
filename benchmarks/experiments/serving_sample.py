"""Experiment: fit the serving calibration on a balanced sample of the silicon runs, or on every run?

Run: ``python -m benchmarks.experiments.serving_sample --basis-cache PATH`` (PATH: the parquet of every run
simulated that ``benchmarks.experiments.serving_accuracy --basis-cache PATH`` writes; seconds once it exists).

The silicon CSV holds far more runs of some GPUs than of others (B200 about half). ``serving_accuracy`` fits the
calibration on at most ``--max-per-group`` runs per framework, GPU, model and mode (the first by id), and keeps
every run as an anchor. This prints, for the sampled runs, the leave-one-GPU-out and leave-one-model-out TTFT /
TPOT MdAPE and p90 of three set-ups, each held-out group left out of both the fit and the anchors:

* the sample fitted, the sample as anchors;
* the sample fitted, every run as anchors (what ships);
* every run fitted and anchoring (scored on the same sampled runs, then on every run).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from scheduler import serving_model as sm


def _scores(frame: pd.DataFrame) -> str:
    cells = []
    for t in sm.TARGETS:
        ape = sm.ape(frame[f"pred_{t}_ms"], frame[f"measured_{t}_ms"])
        cells.append(f"{np.median(ape):>6.1%} {np.percentile(ape, 90):>5.0%}")
    return "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--basis-cache", required=True, help="parquet of every run, from serving_accuracy")
    parser.add_argument("--max-per-group", type=int, default=40)
    args = parser.parse_args()
    simulated = pd.read_parquet(args.basis_cache)
    # sampled as serving_accuracy samples (over every run of the CSV, predicted or not), then the predicted ones
    sample = sm.balanced_sample(simulated, args.max_per_group)
    every = simulated[(simulated["skip"] == "") & sm.usable(simulated)].reset_index(drop=True)
    sample = sample[(sample["skip"] == "") & sm.usable(sample)].reset_index(drop=True)
    ids = set(sample["id"])
    print(f"{len(every)} runs, {len(sample)} in the sample (at most {args.max_per_group} per framework, GPU, model, mode)")
    print(f"{'held out':9s} {'set-up':44s} {'runs':>5s}  {'TTFT md':>7s} {'p90':>5s}  {'TPOT md':>7s} {'p90':>5s}")
    for group in ("system", "model"):
        fit_all = sm.held_out(every, group)
        rows = [("sample fitted, sample anchors", sm.held_out(sample, group)),
                ("sample fitted, every run as anchors", sm.held_out(sample, group, every)),
                ("every run fitted and anchoring", fit_all[fit_all["id"].isin(ids)]),
                ("every run fitted, scored on every run", fit_all)]
        for name, frame in rows:
            print(f"{group:9s} {name:44s} {len(frame):>5d}  {_scores(frame)}")


if __name__ == "__main__":
    main()
