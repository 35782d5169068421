"""Experiment: which serving-calibration features carry over to a GPU the fit never saw?

Run: ``python -m benchmarks.experiments.serving_features --basis-cache PATH [--h200-cache PATH]``.

``--basis-cache`` is the kernel-only basis that ``benchmarks.experiments.serving_accuracy --basis-cache PATH``
writes (the silicon runs simulated once); the runs compared are its balanced sample, the shipped calibration's
fit (``--max-per-group``). For each calibration form (:data:`VARIANTS`: feature set, target — the
shipped log ratio of measured over simulated, or log measured time non-decreasing in every feature that moves with
the GPU's speed or memory — objective and tree size) it prints the leave-one-GPU-out
and leave-one-model-out TTFT / TPOT MdAPE (each group predicted by a calibration fitted without it), and a
consistency check on H200, a GPU with no measurements: the H100 runs (up to 6 per framework × model × mode) are
simulated again relabelled ``h200_sxm`` (kept in ``--h200-cache``), the calibration fitted on every run predicts
both, and the table gives the median H200/H100 ratio of the calibrated TTFT and TPOT and the share of runs the
calibration puts more than 5% *slower* on H200 although the simulation puts them no slower. The H200 has the
H100's compute and 43% more memory bandwidth; a calibration that reverses the simulation's order there is
reading the GPU's identity into a feature rather than physics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from scheduler import serving_model as sm

DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator" / "silicon_sample_without_h200.csv"
GPU_RATIOS = ("kernel_over_roof_tpot", "kernel_over_roof_ttft")
ROOFLINE = ("log_roof_ttft", "log_roof_tpot")
# every feature that moves with the GPU's speed or memory, each in the direction that cannot make a run faster
SPEED_INCREASING = ("log_sim_ttft", "log_sim_tpot", "log_sim_first_ttft", "log_sim_queue", "log_roof_ttft",
                    "log_roof_tpot", "kv_demand", "log_gap")
# "log_kernels_per_ms" falls as the step's simulated time grows, so it has no direction either
NO_DIRECTION = GPU_RATIOS + ("prefill_share", "log_kernels_per_ms")


def _without(drop: tuple[str, ...]) -> dict:
    """The shipped per-target features less ``drop``."""
    return {t: tuple(f for f in sm.TARGET_FEATURES[t] if f not in drop) for t in sm.TARGETS}


# name -> (features per target, target: "ratio" (log measured / simulated, as shipped) or "absolute" (log
# measured, non-decreasing in every feature of SPEED_INCREASING)[, objective[, tree parameters]])
VARIANTS = {
    "shipped": (sm.TARGET_FEATURES, "ratio"),
    "no kernel launches (TPOT)": (_without(sm.LAUNCH_FEATURES), "ratio"),
    "no kernel/roofline ratios": (_without(GPU_RATIOS), "ratio"),
    "no ratios, no roofline times": (_without(GPU_RATIOS + ROOFLINE), "ratio"),
    "shipped, smoother trees": (sm.TARGET_FEATURES, "ratio", "l1", {"num_leaves": 4, "min_data_in_leaf": 80}),
    "absolute, monotone, l2": (_without(NO_DIRECTION), "absolute", "l2"),
    "absolute, monotone, huber": (_without(NO_DIRECTION), "absolute", "huber"),
}


def _fit(rows: pd.DataFrame, variant: tuple) -> dict:
    """The calibration's two boosters for ``variant`` (:func:`scheduler.serving_model.fit_boosters`)."""
    features, kind = variant[:2]
    params = dict(sm.PARAMS, objective=variant[2] if len(variant) > 2 else sm.PARAMS["objective"],
                  **(variant[3] if len(variant) > 3 else {}))
    if kind == "absolute":
        return sm.fit_boosters(rows, features, lambda names: dict(
            params, monotone_constraints=[1 if f in SPEED_INCREASING else 0 for f in names],
            monotone_constraints_method="advanced"), ratio=False)
    return sm.fit_boosters(rows, features, params)


def _predict(models: dict, rows: pd.DataFrame, variant: tuple, target: str) -> np.ndarray:
    features, kind = variant[:2]
    x = sm.serving_features(rows)[list(features[target])].to_numpy(float)
    base = rows[f"kernel_{target}_ms"].to_numpy(float) if kind == "ratio" else 1.0
    return base * np.exp(models[target].predict(x))


def _held_out(rows: pd.DataFrame, group: str, variant: tuple) -> dict[str, float]:
    pred = {t: np.full(len(rows), np.nan) for t in sm.TARGETS}
    for value in rows[group].astype(str).unique():
        mask = (rows[group].astype(str) == value).to_numpy()
        if (~mask).sum() < sm.MIN_ROWS:
            continue
        models = _fit(rows[~mask], variant)
        for t in sm.TARGETS:
            pred[t][mask] = _predict(models, rows[mask], variant, t)
    return {t: sm.mdape(pred[t], rows[f"measured_{t}_ms"]) for t in sm.TARGETS}


def _h200_basis(path: Path | None, csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(H100 runs, the same runs relabelled H200), both simulated kernel-only; cached at ``path``."""
    if path is not None and path.exists():
        both = pd.read_parquet(path)
        return both[both["system"] == "h100_sxm"].reset_index(drop=True), both[both["system"] == "h200_sxm"].reset_index(drop=True)
    from features.silicon import read_serving_results
    from predictor import Predictor
    from scheduler.serving_eval import kernel_basis

    table = read_serving_results(csv)
    h100 = table[table["system"] == "h100_sxm"].sort_values("id", kind="stable")
    h100 = h100.groupby(["framework", "model_path", "mode"]).head(6)
    predictor = Predictor.load()
    a, b = kernel_basis(h100, predictor), kernel_basis(h100.assign(system="h200_sxm"), predictor)
    ok = ((a["skip"] == "") & (b["skip"] == "")).to_numpy()
    a, b = a[ok].reset_index(drop=True), b[ok].reset_index(drop=True)
    if path is not None:
        from predictor.atomic import atomic_write

        atomic_write(path, pd.concat([a, b]).to_parquet())
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--basis-cache", required=True, help="parquet written by serving_accuracy --basis-cache")
    parser.add_argument("--h200-cache", default=None, help="parquet of the H100 runs simulated on H100 and H200")
    parser.add_argument("--serving", default=str(DEFAULT_CSV))
    parser.add_argument("--max-per-group", type=int, default=40, help="as serving_accuracy's (0: every run)")
    args = parser.parse_args()
    basis = sm.balanced_sample(pd.read_parquet(args.basis_cache), args.max_per_group)  # the shipped fit's runs
    rows = basis[(basis["skip"] == "") & sm.usable(basis)].reset_index(drop=True)
    h100, h200 = _h200_basis(Path(args.h200_cache) if args.h200_cache else None, Path(args.serving))
    print(f"{len(rows)} runs; H200 check on {len(h100)} H100 runs")
    print(f"{'features':32s} {'GPU out TTFT':>12} {'TPOT':>6} {'model out TTFT':>14} {'TPOT':>6} "
          f"{'H200/H100 TTFT':>14} {'TPOT':>6} {'reversed TTFT':>13} {'TPOT':>6}")
    for name, variant in VARIANTS.items():
        gpu, model = _held_out(rows, "system", variant), _held_out(rows, "model", variant)
        models = _fit(rows, variant)
        cells = []
        reversed_share = []
        for t in sm.TARGETS:
            ratio = _predict(models, h200, variant, t) / _predict(models, h100, variant, t)
            sim = h200[f"kernel_{t}_ms"].to_numpy(float) / h100[f"kernel_{t}_ms"].to_numpy(float)
            cells.append(np.median(ratio))
            reversed_share.append(np.mean((ratio > 1.05) & (sim <= 1.0)))
        print(f"{name:32s} {gpu['ttft']:>12.1%} {gpu['tpot']:>6.1%} {model['ttft']:>14.1%} {model['tpot']:>6.1%} "
              f"{cells[0]:>14.3f} {cells[1]:>6.3f} {reversed_share[0]:>13.0%} {reversed_share[1]:>6.0%}")


if __name__ == "__main__":
    main()
