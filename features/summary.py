"""Summaries and plots of canonical kernel tables (``inference-sim data summary``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from predictor.atomic import atomic_write, save_figure

GROUP = ["source", "gpu", "op_kind", "dtype"]


def dtype_label(df: pd.DataFrame) -> pd.Series:
    """Readable precision per row: ``bf16``/``fp16``/``fp8``, ``w4a16`` for weight-only, ``+kv8`` for a low-bit KV cache."""
    w = df["weight_bits"].astype(int).astype(str)
    a = df["act_bits"].astype(int).astype(str)
    base = np.where(df["weight_bits"] < df["act_bits"], "w" + w + "a" + a, df["compute_dtype"].astype(str))
    kv = np.where(df["kv_bits"] < 16, "+kv" + df["kv_bits"].astype(int).astype(str), "")
    return pd.Series(base, index=df.index) + kv


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per source × GPU × op kind × dtype, with the model count and measured-time range (ms)."""
    if df.empty:
        return pd.DataFrame(columns=[*GROUP, "rows", "models", "min_ms", "max_ms"])
    t = df.assign(dtype=dtype_label(df))
    out = t.groupby(GROUP, observed=True).agg(
        rows=("measured_ms", "size"),
        models=("model", lambda s: int((s.astype(str) != "").any() and s[s.astype(str) != ""].nunique())),
        min_ms=("measured_ms", "min"), max_ms=("measured_ms", "max"),
    ).reset_index()
    return out.sort_values(GROUP).reset_index(drop=True)


def summary_payload(counts: pd.DataFrame, report: dict) -> dict:
    """JSON-able summary: the count table, totals per source and the ingestion report."""
    return {
        "total_rows": int(counts["rows"].sum()) if len(counts) else 0,
        "rows_by_source": {k: int(v) for k, v in counts.groupby("source")["rows"].sum().items()},
        "rows_by_gpu": {k: int(v) for k, v in counts.groupby("gpu")["rows"].sum().items()},
        "rows_by_op_kind": {k: int(v) for k, v in counts.groupby("op_kind")["rows"].sum().items()},
        "table": counts.to_dict(orient="records"),
        "ingest": report,
    }


def summary_markdown(payload: dict) -> str:
    """The summary as Markdown tables (for ``docs/data.md``)."""
    lines = ["# Kernel-profile data", "",
             "Produced by `inference-sim data summary --markdown docs/data.md --plot docs/ratio_vs_intensity.png` "
             "from the shipped canonical tables in `data/` (built from the published sources by "
             "`inference-sim data build`; licences and provenance notes beside each table).", "",
             "![measured over roofline against arithmetic intensity](ratio_vs_intensity.png)", "",
             f"Total canonical kernel rows: **{payload['total_rows']:,}**", "",
             "| source | GPU | op kind | dtype | rows | models | min ms | max ms |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in payload["table"]:
        lines.append(f"| {r['source']} | {r['gpu']} | {r['op_kind']} | {r['dtype']} | {r['rows']:,} | {r['models']} | "
                     f"{r['min_ms']:.4g} | {r['max_ms']:.4g} |")
    lines += ["", "Ingestion (rows kept after validation, duplicate keys averaged, rows rejected per reason):", "",
              "| source | kept | merged duplicates | rejected (reason: rows) |", "|---|---:|---:|---|"]
    for source, rep in payload["ingest"].items():
        rejected = ", ".join(f"{k}: {v:,}" for k, v in rep.get("rejected", {}).items()) or "none"
        lines.append(f"| {source} | {rep.get('kept', 0):,} | {rep.get('merged_duplicates', 0):,} | {rejected} |")
    return "\n".join(lines) + "\n"


def ratio_plot(df: pd.DataFrame, path: str | Path, max_points_per_group: int = 4000, seed: int = 0) -> Path:
    """Scatter of measured / roofline against arithmetic intensity, one panel per GPU, coloured by op kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from predictor.roofline import roofline

    r = roofline(df)
    t = pd.DataFrame({"gpu": df["gpu"].astype(str).to_numpy(), "op_kind": df["op_kind"].astype(str).to_numpy(),
                      "intensity": r["intensity"].to_numpy(), "ratio": df["measured_ms"].to_numpy() / r["ideal_ms"].to_numpy()})
    t = t[(t["intensity"] > 0) & np.isfinite(t["ratio"])]
    t = t.sample(frac=1.0, random_state=seed).groupby(["gpu", "op_kind"]).head(max_points_per_group)
    gpus = sorted(t["gpu"].unique())
    kinds = sorted(t["op_kind"].unique())
    colors = dict(zip(kinds, plt.cm.tab10(np.linspace(0, 1, max(len(kinds), 1))), strict=False))
    cols = min(3, len(gpus))
    rows = int(np.ceil(len(gpus) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), dpi=110, squeeze=False, sharey=True)
    for ax, gpu in zip(axes.flat, gpus, strict=False):
        g = t[t["gpu"] == gpu]
        for kind in kinds:
            k = g[g["op_kind"] == kind]
            if len(k):
                ax.scatter(k["intensity"], k["ratio"], s=3, alpha=0.4, color=colors[kind], label=kind)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_title(gpu, fontsize=9)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)", fontsize=8)
        ax.grid(True, which="major", alpha=0.2)
    for ax in axes.flat[len(gpus):]:
        ax.axis("off")
    axes[0][0].set_ylabel("measured / roofline")
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[k], label=k) for k in kinds]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(kinds), 6), fontsize=8, frameon=False)
    fig.suptitle("Measured kernel time over roofline time (1 = ideal), published profiles", fontsize=10)
    return save_figure(fig, path, rect=(0, 0.06, 1, 0.97))


def write_markdown(text: str, path: str | Path) -> Path:
    return atomic_write(path, text)
