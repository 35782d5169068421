"""Experiment: serving accuracy on a GPU whose kernels the residual model never saw either; writes
``docs/unseen-gpu.md``.

Run: ``python -m benchmarks.experiments.serving_unseen_kernels --basis-cache PATH [--work DIR]`` (about an hour on
2 cores: one kernel model fitted and the held-out runs simulated again per GPU; ``--work`` keeps each step, so a
rerun resumes).

``docs/serving-accuracy.md`` holds each GPU out of the serving calibration, its anchors and the engine profiles,
but its runs are simulated with the shipped kernel model, which was trained on that GPU's kernel tables too. A
GPU that users bring (an H200: neither its kernels nor its serving runs are in the data) has neither. Here, for
each GPU with measured serving runs, the residual model is refitted without that GPU's kernel rows (the shipped
artifact's parameters, rounds and final sample size; its training GPUs exclude the held-out one, so the
predictor brackets that GPU's ops between its trained siblings as it does an H200's) and the GPU's sampled runs are
simulated again with it: kernels only (the calibration's input) and with the engine profiles fitted without the
GPU (the TTFT blend's other half). The calibration is then fitted and scored held out by GPU exactly as in
``serving_accuracy``. The other GPUs' runs, the anchors and the dominance bounds keep the shipped kernel model's
simulations (the fold model differs from it only by the held-out GPU's rows).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.experiments.serving_accuracy import DEFAULT_CSV, bounds_cache_path, cached_basis, held_out_runs
from benchmarks.experiments.serving_profiles import ape_cell, raw_columns
from predictor import Predictor
from predictor.artifact import SHIPPED_DIR, save_artifact
from predictor.atomic import atomic_write
from predictor.gpus import get_gpu
from scheduler.engine_profiles import fit_profiles
from scheduler.serving_eval import kernel_basis, predict_serving
from scheduler.serving_model import balanced_sample, held_out

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "unseen-gpu.md"
KERNEL_COLUMNS = ("kernel_ttft_ms", "kernel_tpot_ms", "kernel_first_ttft_ms", "kernel_queue_ms", "kernel_kv_tokens",
                  "kernel_launches")


def fold_artifact(data, held_kernel_gpu: str, directory: Path) -> Path:
    """The shipped artifact's model refitted without ``held_kernel_gpu``'s kernel rows, saved at ``directory``
    (reused when it is there)."""
    from training.dataset import balanced_sample as balanced_rows
    from training.models import ResidualModel

    if (directory / "checksum.sha256").exists():
        return directory
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    keep = np.flatnonzero(data.table["gpu"].to_numpy() != held_kernel_gpu)
    rows = balanced_rows(data.table, keep, int(meta["training_rows"]), int(meta["params"].get("seed", 0)))
    model = ResidualModel(meta["params"], int(meta["num_boost_round"])).fit(data.X.iloc[rows], data.log_ratio[rows])
    trained = sorted(set(data.table["gpu"].iloc[keep].unique()))
    metadata = {k: v for k, v in meta.items() if k not in ("kernel_families", "metrics")}
    metadata.update(training_gpus=trained, training_rows=int(len(rows)),
                    split_signature=f"leave_one_gpu_out:{','.join(trained)}",
                    note=f"experiment fold: the shipped parameters without {held_kernel_gpu}'s kernel rows")
    return save_artifact(directory, model.booster_.model_to_string(), metadata)


def unseen_runs(rows: pd.DataFrame, basis: pd.DataFrame, artifact: Path, n_jobs: int) -> pd.DataFrame:
    """``rows`` (one GPU's, with their shipped-model simulations) simulated again with the fold ``artifact``:
    kernel-only columns replaced, ``profile_*`` redone with profiles fitted without the GPU (aggregated runs)."""
    raw = [c for c in raw_columns(rows) if not c.startswith("profile_")]
    sim = kernel_basis(rows[raw], artifacts=str(artifact), n_jobs=n_jobs, with_roofline=False).set_index("id")
    out = rows.copy()
    for column in KERNEL_COLUMNS:
        out[column] = out["id"].map(sim[column])
    system = str(rows["system"].iloc[0])
    profiles = fit_profiles(basis[basis["system"].astype(str) != system])  # the fold of serving_profiles.fold_profiles
    agg = out[(out["mode"] == "agg") & out["framework"].isin(profiles)]
    out["profile_ttft_ms"], out["profile_tpot_ms"] = np.nan, np.nan
    if len(agg):
        prof = predict_serving(agg[raw], artifacts=str(artifact), profiles=profiles, with_roofline=False,
                               n_jobs=n_jobs).set_index("id")
        for t in ("ttft", "tpot"):
            out[f"profile_{t}_ms"] = out["id"].map(prof[f"pred_{t}_ms"])
    return out


def render(seen: pd.DataFrame, unseen: pd.DataFrame, source: str) -> str:
    both = seen[["id", "framework", "system", "pred_ttft_ms", "pred_tpot_ms", "kernel_ttft_ms", "kernel_tpot_ms",
                 "roofline_ttft_ms", "roofline_tpot_ms", "measured_ttft_ms", "measured_tpot_ms"]].merge(
        unseen[["id", "pred_ttft_ms", "pred_tpot_ms", "kernel_ttft_ms", "kernel_tpot_ms"]], on="id",
        suffixes=("", "_unseen"))
    head = ("| framework | held-out GPU | runs | TTFT kernels seen | TTFT kernels unseen | TTFT roofline | "
            "TPOT kernels seen | TPOT kernels unseen | TPOT roofline | TPOT kernels only, seen | "
            "TPOT kernels only, unseen |")

    def row(label, gpu, g):
        cells = [ape_cell(g[c], g.measured_ttft_ms) for c in ("pred_ttft_ms", "pred_ttft_ms_unseen", "roofline_ttft_ms")]
        cells += [ape_cell(g[c], g.measured_tpot_ms) for c in ("pred_tpot_ms", "pred_tpot_ms_unseen", "roofline_tpot_ms",
                                                            "kernel_tpot_ms", "kernel_tpot_ms_unseen")]
        return f"| {label} | {gpu} | {len(g)} | " + " | ".join(cells) + " |"

    lines = ["# Serving accuracy on a GPU whose kernels were held out too", "",
             "<!-- generated by benchmarks/experiments/serving_unseen_kernels.py; do not edit by hand -->", "",
             f"Source: `{source}`, the runs `docs/serving-accuracy.md` scores held out by GPU. There, each GPU is held "
             "out of the serving calibration, its anchors and the engine profiles, but its runs are simulated with "
             "the shipped kernel model, which trained on that GPU's kernel tables. Here the kernel model is also "
             "refitted without them (the shipped parameters and sample size; the predictor brackets the GPU's ops "
             "between its trained siblings, as it does an H200's), and the GPU's runs are simulated again with it "
             "(kernels only, and with the engine profiles fitted without the GPU) before the held-out calibration "
             "predicts them: what a GPU with neither kernel tables nor serving runs in the data gets "
             "(`benchmarks/experiments/serving_unseen_kernels.py`). The other GPUs' runs, the anchors and the "
             "dominance bounds keep the shipped model's simulations. MdAPE / p90 APE of the calibrated prediction, "
             "of the roofline-only simulation (the baseline; no kernel model in it) and, for TPOT, of the "
             "kernel-only simulation:", "", head, "|" + "---|" * 11]
    for (f, s), g in both.groupby(["framework", "system"], sort=True):
        lines.append(row(f, s, g))
    for f, g in both.groupby("framework", sort=True):
        lines.append(row(f"**{f}**", "all", g))
    lines.append(row("**all**", "all", both))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving", default=str(DEFAULT_CSV))
    parser.add_argument("--basis-cache", required=True, help="the serving_accuracy basis cache (pooled kernels)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "inference-sim-unseen-kernels"),
                        help="folder for the fold models and simulations (a rerun resumes from it)")
    parser.add_argument("--doc", default=str(DOC))
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    from features.silicon import read_serving_results

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load()
    every = read_serving_results(args.serving)
    table = balanced_sample(every, 40)
    runs = held_out_runs(cached_basis(args.basis_cache, every, predictor), every, table, predictor,
                         bounds_cache=bounds_cache_path(args.basis_cache))
    by_system = runs["by_group"]["system"]
    data = None
    parts = []
    for system in sorted(by_system["system"].astype(str).unique()):
        part_path = work / f"runs_{system}.parquet"
        if not part_path.exists():
            if data is None:
                from training.dataset import load_training_data

                data = load_training_data()
            kernel_gpu = get_gpu(system).name
            artifact = fold_artifact(data, kernel_gpu, work / f"fold_{kernel_gpu}")
            rows = by_system[by_system["system"].astype(str) == system]
            atomic_write(part_path, unseen_runs(rows, runs["basis"], artifact, args.n_jobs).to_parquet())
            print(f"{system}: {len(rows)} runs simulated with the kernel model fitted without {kernel_gpu}", flush=True)
        parts.append(pd.read_parquet(part_path))
    spliced = pd.concat(parts).set_index("id").loc[by_system["id"]].reset_index()
    unseen = held_out(spliced, "system", runs["anchors"], relabelled=runs["relabelled"])
    atomic_write(args.doc, render(runs["logo"], unseen, Path(args.serving).name))
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
