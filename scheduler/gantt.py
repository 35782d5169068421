"""Gantt chart of an executed plan: GPUs × time, one colour per LLM, loading hatched."""

from __future__ import annotations

from pathlib import Path

from predictor.atomic import save_figure


def gantt_chart(execution, num_gpus: int, path: str | Path, title: str = "") -> Path:
    """Draw ``execution.intervals`` (see :class:`scheduler.execution.Execution`) to a PNG, atomically.

    The chart shows one execution — one output-length sample — so a ``title`` that states a makespan must
    state this execution's (``execution.makespan_s``) and say which sample it is; the default title does.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({iv.llm for iv in execution.intervals})
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    colours = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(11, 0.45 * num_gpus + 1.8), dpi=110)
    for iv in execution.intervals:
        for gpu in iv.gpus:
            if iv.serve_s > iv.load_s:
                ax.broken_barh([(iv.load_s, iv.serve_s - iv.load_s)], (gpu - 0.4, 0.8), facecolors=colours[iv.llm],
                               alpha=0.35, hatch="///", edgecolor="white")
            if iv.end_s > iv.serve_s:
                ax.broken_barh([(iv.serve_s, iv.end_s - iv.serve_s)], (gpu - 0.4, 0.8), facecolors=colours[iv.llm],
                               edgecolor="white")
    for t in execution.stage_ends_s:
        ax.axvline(t, color="black", lw=0.5, alpha=0.3)
    ax.set_yticks(range(num_gpus))
    ax.set_yticklabels([f"GPU {g}" for g in range(num_gpus)])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)   —   hatched: loading the model; thin lines: stage ends")
    ax.set_title(title or f"plan: makespan {execution.makespan_s:.0f} s (this sample)", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
    ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=min(len(names), 5), fontsize=8,
              frameon=False)
    return save_figure(fig, path)
