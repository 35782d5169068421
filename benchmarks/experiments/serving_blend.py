"""Experiment part: the TTFT blend of the serving calibration with the engine-profile simulation, held out.

``scheduler.serving_model`` predicts the TTFT of an aggregated run that no sibling GPU anchors as the geometric
mean of two models: the calibration (a learned correction of the kernel-only run) and the run simulated with its
framework's engine profile (per-step costs). TPOT stays the calibration's. This part scores that rule against
each of its parts, and against blending TPOT too, on the held-out splits of ``serving_accuracy`` (the same
calibrations and profiles, fitted without the held-out GPU or model), so that the rule's claim in ``docs/model.md``
rests on a table that regenerates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.experiments.serving_profiles import ape_cell
from scheduler.serving_model import held_out


def blend_parts(by_group: pd.DataFrame, group: str, anchors: pd.DataFrame, relabelled: pd.DataFrame | None,
                blended: pd.DataFrame) -> pd.DataFrame:
    """Per held-out run of one split: measured and predicted TTFT / TPOT as shipped (``blended``: the split's
    :func:`held_out` result), by the calibration alone (refitted the same way without the profile column) and by
    the engine profile alone (the calibration where the blend does not apply), and ``blends`` (whether the TTFT
    rule applies: a run without anchors and with a profile simulation, which only aggregated runs get; TPOT's
    blend is scored on the same runs)."""
    alone = held_out(by_group.drop(columns=["profile_ttft_ms"], errors="ignore"), group, anchors,
                     relabelled=relabelled).set_index("id").loc[blended["id"]]
    out = pd.DataFrame({"id": blended["id"].to_numpy(), "mode": blended["mode"].to_numpy()})
    rule = blended["profile_ttft_ms"].to_numpy(float)
    out["blends"] = (blended["anchor_runs"].to_numpy() == 0) & np.isfinite(rule) & (rule > 0)
    for target in ("ttft", "tpot"):
        profile = blended[f"profile_{target}_ms"].to_numpy(float)
        applies = out["blends"].to_numpy() & np.isfinite(profile) & (profile > 0)
        calibration = alone[f"pred_{target}_ms"].to_numpy(float)
        out[f"measured_{target}"] = blended[f"measured_{target}_ms"].to_numpy(float)
        out[f"calibration_{target}"] = calibration
        out[f"profile_{target}"] = np.where(applies, profile, calibration)
        out[f"blend_{target}"] = np.where(applies, np.sqrt(calibration * np.where(applies, profile, 1.0)), calibration)
        out[f"shipped_{target}"] = blended[f"pred_{target}_ms"].to_numpy(float)
    return out


def blend_lines(runs: dict) -> list[str]:
    """Markdown section: the blend against its parts, held out by GPU and by model (``runs``: what
    ``serving_accuracy.held_out_runs`` returns)."""
    lines = ["### TTFT: the calibration, the engine profile and their blend", "",
             "An aggregated run that no sibling anchors takes as TTFT the geometric mean of the calibration's and "
             "the engine-profile simulation's (`scheduler/serving_model.py`). The same held-out calibrations and "
             "profiles, each part alone and the rule applied to TPOT as well; \"blend applies\" are the runs the "
             "rule changes (elsewhere all columns agree). These comparisons chose the rule, so the shipped "
             "column is slightly optimistic. MdAPE / p90 APE; the calibration's seed spread above applies:", "",
             "| held out | runs | TTFT blend (shipped) | TTFT calibration | TTFT engine profile | TPOT calibration "
             "(shipped) | TPOT blend | TPOT engine profile |", "|---|---|---|---|---|---|---|---|"]
    for group, label in (("system", "GPU"), ("model", "model")):
        parts = blend_parts(runs["by_group"][group], group, runs["anchors"], runs.get("relabelled"),
                            runs["logo" if group == "system" else "lomo"])
        for name, rows in ((f"{label}: blend applies", parts[parts["blends"]]), (f"{label}: all", parts)):
            cells = [ape_cell(rows[f"{k}_ttft"], rows["measured_ttft"]) for k in ("shipped", "calibration", "profile")]
            cells += [ape_cell(rows[f"{k}_tpot"], rows["measured_tpot"]) for k in ("shipped", "blend", "profile")]
            lines.append(f"| {name} | {len(rows):,} | " + " | ".join(cells) + " |")
    return lines + [""]
