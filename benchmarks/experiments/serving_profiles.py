"""The engine profiles of ``simulate --framework`` scored on held-out GPUs and held-out models — a section of
``docs/serving-accuracy.md`` (written by ``serving_accuracy.py``).

The calibration corrects whole runs; the profiles time each step of a simulation of the user's own workload, so
they are scored by simulating: for each GPU (or model), the profiles are fitted (:func:`scheduler.engine_profiles.fit_profiles`)
on the sample's runs of every other GPU, and each aggregated run of the held-out GPU is simulated closed-loop with
its framework's profile (:func:`scheduler.serving_eval.predict_serving`): scaled kernels and roofline, per-step
overhead, CUDA-graph padding and the admission delay, with no calibration after it. Disaggregated runs are not
scored here (a profile times one aggregated engine, which is what ``simulate --framework`` runs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scheduler.engine_profiles import fit_profiles
from scheduler.serving_eval import predict_serving
from scheduler.serving_model import ape

# columns the simulations add to the CSV's (dropped before a run is simulated again)
_SIMULATED = ("pred_", "kernel_", "roofline_", "legacy_", "unanchored_")
_ADDED = ("skip", "model", "gpus", "fit_rows", "anchor_runs", "pool_workers_given")


def raw_columns(frame: pd.DataFrame) -> list[str]:
    """The measured run's own columns of ``frame`` (the CSV's), without what a simulation or the calibration added."""
    return [c for c in frame.columns if not c.startswith(_SIMULATED) and c not in _ADDED]


def fold_profiles(basis: pd.DataFrame, group: str = "system") -> dict[str, dict]:
    """For each ``group`` value with predicted aggregated runs: the profiles fitted without it."""
    done = basis[(basis["skip"] == "") & (basis["mode"] == "agg")]
    return {value: fit_profiles(basis[basis[group].astype(str) != value])
            for value in sorted(done[group].astype(str).unique())}


def held_out_profiles(basis: pd.DataFrame, predictor, group: str = "system", n_jobs: int | None = None) -> pd.DataFrame:
    """Each predicted aggregated run of ``basis`` simulated with profiles fitted without its ``group`` value.

    Returns the runs (``id``, ``framework``, ``group``, measured and kernel-only / roofline times) with
    ``profile_ttft_ms`` / ``profile_tpot_ms`` (ms) and ``profile_kernel_scale`` (the fold's fitted scale).
    ``n_jobs``: processes (default: the CPUs available); with one, ``predictor`` simulates in this process."""
    from predictor.cpus import available_cpus

    n_jobs = available_cpus() if n_jobs is None else n_jobs
    done = basis[(basis["skip"] == "") & (basis["mode"] == "agg")]
    raw = raw_columns(done)
    folds = fold_profiles(basis, group)
    parts = []
    for value, profiles in folds.items():
        rows = done[(done[group].astype(str) == value) & done["framework"].isin(profiles)]
        if not len(rows):
            continue
        sim = predict_serving(rows[raw], predictor=None if n_jobs > 1 else predictor, profiles=profiles,
                              with_roofline=False, n_jobs=n_jobs).set_index("id")
        part = rows[["id", "framework", group, "measured_ttft_ms", "measured_tpot_ms", "kernel_ttft_ms",
                     "kernel_tpot_ms", "roofline_ttft_ms", "roofline_tpot_ms"]].copy()
        part["profile_ttft_ms"] = part["id"].map(sim["pred_ttft_ms"])
        part["profile_tpot_ms"] = part["id"].map(sim["pred_tpot_ms"])
        part["profile_kernel_scale"] = part["framework"].map({k: p.kernel_scale for k, p in profiles.items()})
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def ape_cell(pred, measured) -> str:
    """A table cell of the serving pages: "MdAPE / p90 APE" of ``pred`` against ``measured`` (ms), over the runs
    with a finite error; "—" when there is none."""
    errors = ape(pred, measured)
    return f"{np.median(errors):.1%} / {np.percentile(errors, 90):.0%}" if len(errors) else "—"


def frame_cell(frame: pd.DataFrame, prefix: str, metric: str) -> str:
    """:func:`ape_cell` of ``frame``'s ``{prefix}_{metric}_ms`` against its ``measured_{metric}_ms``."""
    return ape_cell(frame[f"{prefix}_{metric}_ms"], frame[f"measured_{metric}_ms"])


def profile_lines(frame: pd.DataFrame, group: str = "system") -> list[str]:
    """The section: MdAPE / p90 APE of the profile simulation beside kernels only and the roofline."""
    methods = (("profile (held out)", "profile"), ("kernels only", "kernel"), ("roofline", "roofline"))
    noun = {"system": "GPU", "model": "model"}.get(group, group)
    lines = [f"### Engine profiles on held-out {noun}s", "",
             f"Each aggregated run simulated with its framework's engine profile fitted on the other {noun}s' runs "
             "(`benchmarks/experiments/serving_profiles.py`): the times `simulate --framework` gives, with no "
             "calibration after the simulation. Kernels only and roofline as above. MdAPE / p90 APE:", "",
             "| framework | held out | runs | kernel scale | " + " | ".join(f"TTFT {n}" for n, _ in methods) + " | "
             + " | ".join(f"TPOT {n}" for n, _ in methods) + " |",
             "|" + "---|" * (4 + 2 * len(methods))]

    def row(label: str, value: str, rows: pd.DataFrame, scale: str) -> str:
        cells = [frame_cell(rows, p, "ttft") for _, p in methods] + [frame_cell(rows, p, "tpot") for _, p in methods]
        return f"| {label} | {value} | {len(rows)} | {scale} | " + " | ".join(cells) + " |"

    for (framework, value), rows in frame.groupby(["framework", group], sort=True):
        lines.append(row(framework, str(value), rows, f"{rows['profile_kernel_scale'].iloc[0]:.3f}"))
    for framework, rows in frame.groupby("framework", sort=True):
        lines.append(row(f"**{framework}**", "all", rows, ""))
    lines.append(row("**all**", "all", frame, ""))
    return lines + [""]
