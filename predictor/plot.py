"""Roofline chart (log-log): attained FLOP/s against arithmetic intensity, one point per op."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from predictor.analysis import report_frame
from predictor.atomic import save_figure


def roofline_chart(report: dict, path: str | Path) -> Path:
    """Draw the roofline of a :func:`predictor.analysis.roofline_report` to a PNG file (atomically).

    The roof is min(peak, bandwidth × intensity); the ridge point is where they meet. Each kernel op
    of the prefill iteration (circles) and decode step (triangles) sits at its intensity and the
    FLOP/s it would attain at its ideal time; ops without FLOPs (embedding) and collectives are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = report["gpu_spec"]
    peak = spec["peak_tflops"] * 1e12
    bw = spec["hbm_bandwidth_gbps"] * 1e9
    ridge = spec["ridge_flops_per_byte"]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    x = np.logspace(-2, 5, 400)
    ax.plot(x, np.minimum(peak, bw * x) / 1e12, color="black", lw=2, label="roof")
    ax.axvline(ridge, color="gray", ls="--", lw=1)
    ax.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, peak / 1e12), textcoords="offset points", xytext=(5, -14),
                fontsize=8, color="gray")
    for phase, marker in (("prefill", "o"), ("decode", "^")):
        df = report_frame(report[phase])
        if df.empty:
            continue
        df = df[(df["flops"] > 0) & (df["bytes"] > 0) & (df["ideal_ms"] > 0)]
        attained = df["flops"] / (df["ideal_ms"] / 1e3) / 1e12
        ax.scatter(df["intensity"], attained, marker=marker, s=30 + 300 * df["share"], alpha=0.7,
                   label=f"{phase} ({report[phase]['total_ms']:.2f} ms)")
        offsets = ((6, 6), (6, -12), (-60, 10))
        for (_, row), offset in zip(df.nlargest(3, "total_ms").iterrows(), offsets, strict=False):
            ax.annotate(f"{phase}: {row['op']}", (row["intensity"], row["flops"] / (row["ideal_ms"] / 1e3) / 1e12),
                        fontsize=7, textcoords="offset points", xytext=offset)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attained TFLOP/s at ideal time")
    ax.set_title(f"{report['model']} on {report['gpu']} (tp={report['tp']}, {report['dtype']}, "
                 f"batch {report['batch_size']}, input {report['input_len']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)
