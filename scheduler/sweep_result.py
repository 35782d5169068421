"""A sweep's results table: Pareto front, cheapest point, summary, files and plots (see :mod:`scheduler.sweep`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.atomic import atomic_path, atomic_write, save_figure
from predictor.errors import InputError
from scheduler.sweep_spec import Sweep

# --------------------------------------------------------------------------------------------------
# Analysis of a results table
# --------------------------------------------------------------------------------------------------
def pareto_front(cost: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats on both axes (both minimised).

    A point is dominated when another has cost ≤ and latency ≤ with at least one strictly lower; points
    with a NaN on either axis are never on the front. Exact duplicates are both kept.

    Parameters
    ----------
    cost, latency : array_like
        One value per point (e.g. USD per million output tokens and p90 TTFT in ms).
    """
    cost = np.asarray(cost, float)
    latency = np.asarray(latency, float)
    on = np.zeros(len(cost), bool)
    valid = np.flatnonzero(np.isfinite(cost) & np.isfinite(latency))
    order = valid[np.lexsort((latency[valid], cost[valid]))]
    best = math.inf  # lowest latency among strictly cheaper points
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and cost[order[j]] == cost[order[i]]:
            j += 1
        group = order[i:j]
        m = latency[group].min()
        if m < best:
            on[group[latency[group] == m]] = True
            best = m
        i = j
    return on


def cheapest_meeting_slo(table: pd.DataFrame, cost_column: str = "cost_usd_per_million_output_tokens",
                         latency_column: str = "ttft_p90_ms") -> int | None:
    """Row label of the cheapest point that meets the SLO (ties: lower latency, then fewer GPUs, then order).

    Parameters
    ----------
    table : DataFrame
        With ``status``, ``meets_slo``, ``cost_column``, ``latency_column`` and ``gpus`` columns.
    """
    ok = table[(table["status"] == "ok") & table["meets_slo"].astype(bool) & np.isfinite(table[cost_column])]
    if ok.empty:
        return None
    ranked = ok.assign(_order=np.arange(len(ok))).sort_values(
        [cost_column, latency_column, "gpus", "_order"], kind="stable", na_position="last")
    return ranked.index[0]


def _clean(value):
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _row(table: pd.DataFrame, label) -> dict | None:
    if label is None:
        return None
    return {k: _clean(v) for k, v in table.loc[label].items()}


def output_names(mode: str) -> dict[str, str]:
    """File names a sweep writes into its folder: grid ``results.*`` and ``pareto.png``, search ``search.*``."""
    stem = "results" if mode == "grid" else "search"
    return {"parquet": f"{stem}.parquet", "csv": f"{stem}.csv", "plot": "pareto.png" if mode == "grid" else "search.png",
            "summary": "summary.json"}


@dataclass
class SweepResult:
    """A finished (or interrupted) sweep: its results table and what to write.

    Attributes
    ----------
    table : DataFrame
        One row per grid point (grid mode, :data:`GRID_COLUMNS`) or per configuration (search mode,
        :data:`SEARCH_COLUMNS`); costs in USD, times in ms, rates in requests/s.
    partial : bool
        The sweep was interrupted; the table holds the points finished before that.
    wall_s : float
        Wall time of the simulations (s).
    """

    sweep: Sweep
    mode: str
    table: pd.DataFrame
    partial: bool
    wall_s: float
    backend: str
    total: int
    files: dict = field(default_factory=dict)

    @property
    def cheapest(self) -> dict | None:
        """The cheapest point meeting the SLO (grid; USD per million output tokens) or the cheapest
        configuration per request at its highest sustainable rate (search); None if none qualifies."""
        hits = self.table.index[self.table["cheapest"]]
        return _row(self.table, hits[0]) if len(hits) else None

    def pareto(self) -> pd.DataFrame:
        """The Pareto-front rows (grid mode), cheapest first."""
        return self.table[self.table["pareto"]].sort_values("cost_usd_per_million_output_tokens", kind="stable")

    def cheapest_per_rate(self) -> list[dict]:
        """For each rate of the grid, the configuration meeting the SLO at the lowest USD per hour."""
        out = []
        t = self.table
        for rate in sorted(t["rate"].dropna().unique()):
            sub = t[(t["rate"] == rate)]
            label = cheapest_meeting_slo(sub, cost_column="cost_usd_per_hour", latency_column=self.sweep.pareto_column)
            out.append({"rate": float(rate), "best": _row(t, label)})
        return out

    def summary(self) -> dict:
        """JSON-ready summary (NaN written as null)."""
        s = self.sweep.spec
        t = self.table
        out = {"name": s.name, "mode": self.mode, "model": self.sweep.model.name, "predictor": s.predictor,
               "partial": self.partial, "backend": self.backend, "wall_s": self.wall_s, "total": self.total,
               "slo": s.slo.model_dump(), "workload": s.workload.model_dump() | {"trace": self.sweep.trace},
               "prices": str(self.sweep.prices_path), "files": {k: str(v) for k, v in self.files.items()}}
        status = t["status"].value_counts().to_dict()
        if self.mode == "grid":
            out |= {"points": int(len(t)), "simulated": int(status.get("ok", 0)),
                    "skipped": int(status.get("skipped", 0)), "meeting_slo": int(t["meets_slo"].sum()),
                    "pareto_metric": self.sweep.pareto_column, "cost_metric": "cost_usd_per_million_output_tokens",
                    "cheapest": self.cheapest, "cheapest_per_rate": self.cheapest_per_rate(),
                    "pareto": [_row(t, i) for i in self.pareto().index]}
        else:
            out |= {"configurations": int(len(t)), "feasible": int(status.get("ok", 0)),
                    "infeasible": int(status.get("infeasible", 0)), "skipped": int(status.get("skipped", 0)),
                    "search": s.search.model_dump(), "cost_metric": "cost_usd_per_request", "cheapest": self.cheapest}
        out["skipped_reasons"] = sorted({r for r in t.loc[t["status"] == "skipped", "reason"]})
        return out

    def write(self, out_dir: str | Path, shown_dir: str | Path | None = None) -> dict[str, Path]:
        """Write the table (Parquet and CSV), ``summary.json`` and the plot into ``out_dir`` (atomically).

        Grid mode writes ``results.parquet``, ``results.csv`` and ``pareto.png``; search mode
        ``search.parquet``, ``search.csv`` and ``search.png``. ``shown_dir`` is the folder the summary names
        (default ``out_dir``): where a staging folder's files will be published (see
        :mod:`predictor.output_dir`). Returns the paths under ``shown_dir``.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out: {str(out)!r} is a file, expected a folder")
        out.mkdir(parents=True, exist_ok=True)
        names = output_names(self.mode)
        with atomic_path(out / names["parquet"]) as tmp:
            self.table.to_parquet(tmp, index=False)
        with atomic_path(out / names["csv"]) as tmp:
            self.table.to_csv(tmp, index=False)
        self.plot(out / names["plot"])
        shown = Path(shown_dir) if shown_dir is not None else out
        self.files = {key: shown / name for key, name in names.items()}
        atomic_write(out / names["summary"], json.dumps(self.summary(), indent=2) + "\n")
        return self.files

    def plot(self, path: str | Path) -> Path:
        """Grid: cost vs latency scatter, the Pareto front and the cheapest point meeting the SLO; search:
        highest sustainable rate vs cost per 1,000 requests. PNG, written atomically."""
        return plot_pareto(self, path) if self.mode == "grid" else plot_search(self, path)


def _gpu_colours(names) -> dict:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _short(row: dict) -> str:
    return f"{row['gpu']} tp{row['tp']} {row['dtype']} seqs {row['max_num_seqs']} chunk {row['chunk']}"


def plot_pareto(result: SweepResult, path: str | Path) -> Path:
    """Cost per million output tokens vs the Pareto latency (log-log) for every simulated point (filled:
    meets the SLO; hollow: misses it), the Pareto front as a step line, the cheapest point meeting the SLO
    starred, and the SLO's latency target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.table
    metric = result.sweep.pareto_column
    ok = t[(t["status"] == "ok") & np.isfinite(t[metric]) & np.isfinite(t["cost_usd_per_million_output_tokens"])]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    colours = _gpu_colours(list(result.sweep.gpus))
    for gpu, sub in ok.groupby("gpu", sort=False):
        met = sub[sub["meets_slo"]]
        missed = sub[~sub["meets_slo"]]
        ax.scatter(met[metric], met["cost_usd_per_million_output_tokens"], s=22, color=colours[gpu], alpha=0.8,
                   label=f"{gpu}")
        ax.scatter(missed[metric], missed["cost_usd_per_million_output_tokens"], s=22, facecolors="none",
                   edgecolors=colours[gpu], alpha=0.6, linewidths=0.8)
    front = ok[ok["pareto"]].sort_values(metric)
    if len(front):
        ax.step(front[metric], front["cost_usd_per_million_output_tokens"], where="post", color="black", lw=1.2,
                label="Pareto front")
    slo = result.sweep.spec.slo
    target = slo.ttft_ms if metric.startswith("ttft") else slo.tpot_ms
    if target is not None:
        ax.axvline(target, color="gray", ls="--", lw=1, label=f"SLO {metric.split('_')[0].upper()} {target:g} ms")
    best = result.cheapest
    if best is not None and best[metric] is not None:
        ax.scatter([best[metric]], [best["cost_usd_per_million_output_tokens"]], marker="*", s=260, color="gold",
                   edgecolors="black", zorder=5, label="cheapest meeting SLO")
        rate = f" at {best['rate']:g} req/s" if best.get("rate") is not None else ""
        ax.annotate(f"{_short(best)}{rate}\n${best['cost_usd_per_million_output_tokens']:.3g} per M tokens",
                    (best[metric], best["cost_usd_per_million_output_tokens"]), textcoords="offset points",
                    xytext=(12, 12), fontsize=8, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
    ax.set_xscale("log")
    ax.set_yscale("log")
    label = {"ttft_p90_ms": "p90 TTFT (ms)", "tpot_p99_ms": "p99 TPOT (ms)"}[metric]
    ax.set_xlabel(label)
    ax.set_ylabel("USD per million output tokens")
    n_met = int(ok["meets_slo"].sum())
    ax.set_title(f"{result.sweep.spec.name}: {len(ok)} configurations simulated, {n_met} meet the SLO "
                 f"(filled){' — PARTIAL' if result.partial else ''}", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_search(result: SweepResult, path: str | Path) -> Path:
    """Highest sustainable rate (requests/s) vs USD per 1,000 requests at that rate, one point per feasible
    configuration, the cheapest starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.table
    ok = t[(t["status"] == "ok") & np.isfinite(t["cost_usd_per_request"])]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    colours = _gpu_colours(list(result.sweep.gpus))
    for gpu, sub in ok.groupby("gpu", sort=False):
        ax.scatter(sub["max_rate_rps"], sub["cost_usd_per_request"] * 1e3, s=28, color=colours[gpu], alpha=0.8,
                   label=gpu)
    best = result.cheapest
    if best is not None:
        ax.scatter([best["max_rate_rps"]], [best["cost_usd_per_request"] * 1e3], marker="*", s=260, color="gold",
                   edgecolors="black", zorder=5, label="cheapest per request")
        ax.annotate(f"{_short(best)}\n{best['max_rate_rps']:.3g} req/s, ${best['cost_usd_per_request'] * 1e3:.3g} "
                    f"per 1k requests", (best["max_rate_rps"], best["cost_usd_per_request"] * 1e3),
                    textcoords="offset points", xytext=(12, 12), fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("highest sustainable rate under the SLO (requests/s, one instance)")
    ax.set_ylabel("USD per 1,000 requests at that rate")
    ax.set_title(f"{result.sweep.spec.name}: {len(ok)} of {len(t)} configurations meet the SLO at some rate"
                 f"{' — PARTIAL' if result.partial else ''}", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)
