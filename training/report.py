"""The accuracy report: ``docs/accuracy.md`` and its plots, from a training run's evaluation.

Reads ``evaluation.json`` (metrics over every held-out row) and ``evaluation_sample.parquet`` (a
stratified sample of held-out predictions plus the worst rows) from an artifact folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.artifact import SHIPPED_DIR
from predictor.atomic import atomic_write, save_figure
from predictor.errors import InputError
from training.evaluate import METHODS

SPLIT_TITLES = {
    "leave_one_model_out": "Leave one model out",
    "leave_one_gpu_out": "Leave one GPU out",
    "leave_family_out": "Leave shape families out (today's kernels: MoE, MLA, gated delta-net)",
    "random": "Random 80/20 (reference; leaks shapes and GPUs)",
}
METHOD_TITLES = {"hybrid": "hybrid (roofline × learned residual)", "roofline": "roofline only",
                 "roofline_calibrated": "calibrated roofline (per op kind × GPU)", "ml_only": "ML only (no roofline)"}


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_report_dir() -> Path:
    """Where ``inference-sim report`` writes by default: the project's ``docs/`` in a source checkout (the
    folder holding this project's ``pyproject.toml``), else ``docs/`` under the current folder — never a
    folder inside the installed package."""
    pyproject = PROJECT_ROOT / "pyproject.toml"
    try:
        ours = pyproject.is_file() and 'name = "inference-sim"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        ours = False
    return PROJECT_ROOT / "docs" if ours else Path.cwd() / "docs"


def load_evaluation(artifact_dir: str | Path | None = None) -> tuple[dict, pd.DataFrame, dict]:
    """(evaluation, sample predictions, metadata) of an artifact folder (default: the shipped one)."""
    directory = Path(artifact_dir) if artifact_dir is not None else SHIPPED_DIR
    files = {name: directory / name for name in ("evaluation.json", "evaluation_sample.parquet", "metadata.json")}
    for name, path in files.items():
        if not path.is_file():
            raise InputError(f"--artifacts: {name} is missing in {str(directory)!r}; run `inference-sim train` first")
    from predictor.artifact import load_artifact

    metadata = load_artifact(directory).metadata  # checksums verified like any load
    try:
        evaluation = json.loads(files["evaluation.json"].read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"--artifacts: evaluation.json in {str(directory)!r} is not valid UTF-8 JSON") from None
    splits = evaluation.get("splits") if isinstance(evaluation, dict) else None
    ok = isinstance(splits, dict) and splits and all(
        isinstance(methods, dict) and methods and all(
            isinstance(v, dict) and isinstance(v.get("overall"), dict)
            and {"mdape", "p90_ape"} <= set(v["overall"]) for v in methods.values())
        for methods in splits.values())
    if not ok:
        raise InputError(f"--artifacts: evaluation.json in {str(directory)!r} has no 'splits' of methods with "
                         f"'overall' mdape and p90_ape; rerun `inference-sim train`")
    try:
        sample = pd.read_parquet(files["evaluation_sample.parquet"])
    except Exception as err:  # noqa: BLE001 — pyarrow raises many types for corrupt files
        raise InputError(f"--artifacts: evaluation_sample.parquet in {str(directory)!r} is not a readable Parquet "
                         f"table ({type(err).__name__})") from None
    return evaluation, sample, metadata


def report_json(evaluation: dict) -> dict:
    """``{"splits": {split: {method: {"mdape", "p90_ape"}}}}`` (fractions)."""
    return {"splits": {split: {m: {"mdape": v["overall"]["mdape"], "p90_ape": v["overall"]["p90_ape"]}
                               for m, v in methods.items()} for split, methods in evaluation["splits"].items()}}


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _group_table(methods: dict, group: str, title: str) -> list[str]:
    values = sorted(methods["hybrid"][group])
    head = "| " + title + " | rows | " + " | ".join(f"{m} MdAPE / p90" for m in METHODS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(METHODS)]
    for v in values:
        n = methods["hybrid"][group][v]["n"]
        cells = [f"{_pct(methods[m][group][v]['mdape'])} / {_pct(methods[m][group][v]['p90_ape'])}" for m in METHODS]
        lines.append(f"| {v} | {n:,} | " + " | ".join(cells) + " |")
    return lines


def _plots(sample: pd.DataFrame, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    splits = [s for s in SPLIT_TITLES if s in set(sample["split"])]
    fig, axes = plt.subplots(len(splits), 2, figsize=(10, 4.2 * len(splits)), dpi=100, squeeze=False)
    for row, split in enumerate(splits):
        s = sample[(sample["split"] == split) & ~sample["worst"]]
        for col, method in enumerate(("roofline", "hybrid")):
            ax = axes[row][col]
            ax.scatter(s["measured_ms"], s[method], s=2, alpha=0.3)
            lo = max(min(s["measured_ms"].min(), s[method].min()), 1e-6)
            hi = max(s["measured_ms"].max(), s[method].max())
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("measured (ms)")
            ax.set_ylabel("predicted (ms)")
            ax.set_title(f"{SPLIT_TITLES[split]}: {METHOD_TITLES[method]}", fontsize=8)
    save_figure(fig, out_dir / "accuracy_scatter.png")
    names.append("accuracy_scatter.png")

    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.8), dpi=100, squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        s = sample[(sample["split"] == split) & ~sample["worst"]]
        for method in METHODS:
            ax.ecdf(np.abs(s[method] - s["measured_ms"]) / s["measured_ms"], label=method)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1e2)
        ax.set_xlabel("absolute percentage error (fraction)")
        ax.set_ylabel("fraction of held-out rows")
        ax.set_title(SPLIT_TITLES[split], fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, out_dir / "accuracy_cdf.png")
    names.append("accuracy_cdf.png")
    return names


def write_report(evaluation: dict, sample: pd.DataFrame, out_dir: str | Path, metadata: dict | None = None,
                 name: str = "accuracy.md") -> Path:
    """Write the Markdown report and its PNGs into ``out_dir``; return the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(sample, out_dir)
    metadata = metadata or {}
    lines = ["# Accuracy of the residual model", ""]
    lines += [
        "Every number below is measured on rows the model did not train on. Errors are absolute percentage",
        "errors |predicted − measured| / measured of single kernel calls from the published profiles",
        f"({evaluation.get('rows', 0):,} rows: Vidur and aiconfigurator, see [data.md](data.md)). "
        "Produced by `inference-sim report` from the shipped artifact's evaluation "
        f"(trained {metadata.get('created_at', '?')}, code {metadata.get('code_version', {}).get('git_commit', '?')}).",
        "",
        "Methods, each fit on the same training rows of every fold:",
        "",
        "* **hybrid** — roofline × exp(LightGBM prediction of log(measured/roofline)) from physical features;",
        "* **roofline** — the ideal time max(FLOPs/peak, bytes/bandwidth), no fitting;",
        "* **roofline_calibrated** — roofline × one fitted efficiency per (op kind, GPU) (median ratio on the",
        "  training rows; an unseen GPU falls back to the op kind's constant over all GPUs);",
        "* **ml_only** — LightGBM on shapes, GPU specs, precision and tiling without any roofline term, target log time.",
        "",
        "Splits: **leave one model out** holds out every row profiled for one model (Vidur's per-model profiles)",
        "and also drops from training the model-agnostic rows (aiconfigurator sweeps, the shared attention profile)",
        "whose GEMM or attention shape equals one of the held-out model's, so a sweep cannot leak its layers;",
        "aiconfigurator rows are otherwise training-only in this split. **Leave one GPU out** holds out every row",
        "of one GPU. **Leave shape families out** holds out, per group (MoE, MLA, gated delta-net linear",
        "attention), a seeded half of that group's shape families on every GPU and framework: each MoE family is",
        "one architecture's expert FFN, each gated delta-net family one Qwen3.5 shard, each MLA family one",
        "head count of the DeepSeek-V3 MLA kernels (the only MLA architecture measured, so its held-out 'models'",
        "are its tensor-parallel shards) — the model-level test for kernel sweeps that carry no model name.",
        "Framework is not a feature (a prediction does not know the serving runtime), so the spread between",
        "the vLLM, SGLang and TRT-LLM kernels measured for one shape is error no feature can remove.",
        "Tables by op tell MLA (`mla_prefill`, `mla_decode`) and gated delta-net (`gdn`) apart from other",
        "attention. Hyperparameters were chosen once on a validation of 20% of shape groups (not per fold),",
        "so the held-out figures carry the small optimism of shared hyperparameters.",
        "",
        "## Summary (MdAPE / p90 APE)",
        "",
        "| split | " + " | ".join(METHODS) + " |",
        "|---|" + "---:|" * len(METHODS),
    ]
    for split, methods in evaluation["splits"].items():
        cells = [f"{_pct(methods[m]['overall']['mdape'])} / {_pct(methods[m]['overall']['p90_ape'])}" for m in METHODS]
        lines.append(f"| {SPLIT_TITLES.get(split, split)} | " + " | ".join(cells) + " |")
    lines += ["", "Mean APE and R² of log time:", "", "| split | method | rows | mean APE | R² (log) |",
              "|---|---|---:|---:|---:|"]
    for split, methods in evaluation["splits"].items():
        for m in METHODS:
            o = methods[m]["overall"]
            lines.append(f"| {split} | {m} | {o['n']:,} | {_pct(o['mean_ape'])} | {o['r2_log']:.3f} |")
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    for split, methods in evaluation["splits"].items():
        lines += [f"## {SPLIT_TITLES.get(split, split)}", ""]
        held_title = {"leave_one_model_out": "held-out model", "leave_one_gpu_out": "held-out GPU",
                      "leave_family_out": "held-out family group"}.get(split)
        if held_title:
            lines += _group_table(methods, "by_held_out", held_title) + [""]
        lines += _group_table(methods, "by_op_kind", "op kind") + [""]
        if "by_op" in methods["hybrid"]:
            lines += _group_table(methods, "by_op", "op") + [""]
        if split != "leave_one_gpu_out":
            lines += _group_table(methods, "by_gpu", "GPU") + [""]
        worst = sample[(sample["split"] == split) & sample["worst"]].copy()
        if len(worst):
            worst["hybrid_ape"] = (worst["hybrid"] - worst["measured_ms"]).abs() / worst["measured_ms"]
            lines += ["20 worst held-out rows (hybrid):", "",
                      "| source | GPU | model | op | measured ms | roofline ms | hybrid ms | hybrid APE |",
                      "|---|---|---|---|---:|---:|---:|---:|"]
            for r in worst.sort_values("hybrid_ape", ascending=False).itertuples():
                lines.append(f"| {r.source} | {r.gpu} | {r.model or '–'} | {r.op} | {r.measured_ms:.4g} | "
                             f"{r.roofline_ms:.4g} | {r.hybrid:.4g} | {_pct(r.hybrid_ape)} |")
            lines.append("")
    chosen = evaluation.get("chosen", {})
    config = evaluation.get("config", {})
    rows_note = (f"Each fold's methods were fit on at most {config['max_train_rows']:,} rows sampled evenly over "
                 f"(source, GPU, op kind); the final model on "
                 f"{'all rows' if config.get('final_max_rows') is None else format(config['final_max_rows'], ',') + ' such rows'}"
                 f"; hyperparameter search: {'yes' if config.get('search', True) else 'no (fixed candidate)'}."
                 if "max_train_rows" in config else "")
    lines += ["## Training run", "", f"Chosen hyperparameters: `{json.dumps(chosen)}`. {rows_note}".rstrip(), "",
              "| candidate | rounds | validation MdAPE | p90 |", "|---|---:|---:|---:|"]
    for s in evaluation.get("search", []):
        lines.append(f"| leaves {s.get('num_leaves')}, lr {s.get('learning_rate')}, min leaf {s.get('min_data_in_leaf')} "
                     f"| {s.get('rounds')} | {_pct(s.get('mdape'))} | {_pct(s.get('p90_ape'))} |")
    path = out_dir / name
    atomic_write(path, "\n".join(lines) + "\n")
    return path
