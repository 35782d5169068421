"""Capacity planning: sweep serving configurations, and search each one's highest sustainable request rate.

A sweep spec (YAML, validated by :class:`SweepSpec`; see ``examples/sweep.yaml``) names a model, a workload,
an SLO and a grid over GPU kinds × tensor parallelism × ``max_num_seqs`` × ``max_num_batched_tokens`` (the
chunked-prefill token budget, "chunk") × arrival rate × weight precision. Every grid point is one model
instance on ``tp`` GPUs of one kind.

Grid mode (:func:`run_sweep`)
    Each point is checked first: a ``tp`` that does not shard the model, or a model whose weights and
    workspace leave no room for a KV block (:func:`predictor.memory.plan_memory`), is **skipped** with the
    reason. Every other point is simulated (:class:`scheduler.engine.Simulator`, seeded workload) and gets
    cost (``tp`` × the GPU's USD per GPU-hour from a price table), cost per million output tokens,
    throughput, TTFT/TPOT/E2E p50/p90/p99, SLO attainment (rejected requests count as misses), goodput and
    ``meets_slo`` (attainment ≥ the target). The **Pareto front** minimises both cost per million output
    tokens and one latency — p90 TTFT by default, or p99 TPOT (``pareto: tpot_p99``); the **cheapest point
    meeting the SLO** is the one with the lowest cost per million output tokens.

Search mode (:func:`run_sweep` with ``search=True``)
    The grid without its rate axis; for each configuration the highest Poisson/gamma arrival rate whose run
    of ``num_requests`` requests still meets the SLO, by :func:`bisect_max_rate`. Bounds come from a quick
    throughput estimate: the same requests all arriving at t = 0, and the requests/s the engine completes
    while its queue is non-empty (:func:`saturated_throughput`, ``C``). The search checks ``lo =
    lo_fraction × C`` (failing there: the configuration is *infeasible*), then ``hi = C`` (doubled, at most
    ``max_expand`` times, while it still meets the SLO), then bisects geometrically (each step one
    simulation) until ``hi / lo − 1 ≤ rel_tol`` or ``max_steps`` steps. The rate reported is ``lo``: a rate
    that was simulated and met the SLO, while ``hi`` (``upper_rate_rps``) was simulated and missed it — so
    with the default 5% tolerance the threshold lies within 5% above the reported rate (attainment is not
    strictly monotone in the rate, but with one seed the arrivals at every rate are the same pattern
    compressed in time, so it is nearly so). ``load`` is the rate over ``C``. A finite run can meet a TTFT
    SLO above the engine's throughput when the backlog it builds stays short; rates more than 10% above
    ``C`` are flagged in ``reason`` (raise ``num_requests``). Cost per request at the rate =
    ``cost_usd_per_hour / (3600 × rate)``; the cheapest configuration per unit of sustained load has the
    lowest cost per request.

Execution
    Points run through joblib: in-process (``n_jobs=1``), on local processes (``n_jobs > 1``), or on a Dask
    cluster (``dask="local"`` starts a 2-worker :class:`distributed.LocalCluster` on 127.0.0.1; ``dask=
    "tcp://host:port"`` connects to a running scheduler) through joblib's ``dask`` backend. Each worker
    process loads its own predictor once (:func:`functools.lru_cache`; iteration tables come from the
    on-disk cache) and builds each point's workload from its seed, so a point's result does not depend on
    where it ran: tables are identical locally and on a cluster. Ctrl-C keeps the points finished so far,
    marked ``partial``.
"""


from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from predictor.errors import InputError
from scheduler.sweep_exec import _execute, _parallel, check_execution  # noqa: F401 (_parallel: re-exported)
from scheduler.sweep_result import SweepResult, cheapest_meeting_slo, pareto_front
from scheduler.sweep_spec import (DEFAULT_PRICES, MAX_POINTS, PARETO_METRICS, EngineSpec, GridSpec, SearchSpec,  # noqa: F401
                                  SLOSpec, Sweep, SweepSpec, WorkloadSpec, load_prices, load_sweep, sweep_from_dict)

__all__ = ["Bisection", "Context", "DEFAULT_PRICES", "GRID_COLUMNS", "SEARCH_COLUMNS", "Sweep", "SweepResult",
           "SweepSpec", "bisect_max_rate", "check_execution", "cheapest_meeting_slo", "load_prices", "load_sweep",
           "pareto_front", "run_sweep", "saturated_throughput", "search_configuration", "simulate_point",
           "skip_reason", "sweep_from_dict"]


# --------------------------------------------------------------------------------------------------
# What each worker runs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """Everything a worker needs besides the point (small and picklable; specs travel resolved)."""

    model: Any
    gpus: dict
    workload: dict
    slo_ttft_ms: float | None
    slo_tpot_ms: float | None
    attainment: float
    engine: dict
    predictor: str
    artifacts: str | None
    search: dict = field(default_factory=dict)

    @classmethod
    def of(cls, sweep: Sweep) -> Context:
        s = sweep.spec
        wl = s.workload.model_dump()
        wl["trace"] = sweep.trace
        return cls(model=sweep.model, gpus=dict(sweep.gpus), workload=wl, slo_ttft_ms=s.slo.ttft_ms,
                   slo_tpot_ms=s.slo.tpot_ms, attainment=s.slo.attainment, engine=s.engine.model_dump(),
                   predictor=s.predictor, artifacts=sweep.artifacts, search=s.search.model_dump())


@functools.lru_cache(maxsize=4)
def _predictor(kind: str, artifacts: str | None):
    """One predictor per process (its iteration tables stay in memory for every later point)."""
    from predictor import Predictor

    return Predictor.roofline_only() if kind == "roofline" else Predictor.load(artifacts)


@functools.lru_cache(maxsize=256)
def _workload(kind: str, num_requests: int, rate: float | None, cv: float, trace: str | None, prompt_len: int | None,
              output_len: int | None, output_dist: str | None, seed: int, concurrency: int | None = None):
    from scheduler.workload import build_workload

    return build_workload(kind, num_requests, rate=rate, cv=cv, trace=trace, prompt_len=prompt_len,
                          output_len=output_len, output_dist=output_dist, seed=seed,
                          concurrency=concurrency if kind == "concurrency" else None)


def _engine_config(ctx: Context, point: dict):
    from scheduler.engine import EngineConfig

    return EngineConfig(max_num_seqs=point["max_num_seqs"], max_num_batched_tokens=point["chunk"], **ctx.engine)


def point_layout(point: dict):
    """The point's parallel layout: its ``tp`` (an int) or a :class:`~predictor.parallel.ParallelConfig`."""
    tp, ep, pp, dp = point["tp"], point.get("ep", 1), point.get("pp", 1), point.get("dp_attention", 1)
    if ep == pp == dp == 1:
        return tp
    from predictor.parallel import ParallelConfig

    return ParallelConfig(tp=tp, ep=ep, pp=pp, dp_attention=dp)


def point_gpus(point: dict) -> int:
    """GPUs of one instance at the point's layout: tp × dp_attention × pp."""
    return point["tp"] * point.get("dp_attention", 1) * point.get("pp", 1)


def skip_reason(ctx: Context, point: dict) -> str | None:
    """Why a configuration cannot run (``tp`` does not shard the model, or it does not fit), else None."""
    from predictor.memory import plan_memory
    from predictor.precision import parse_dtype

    try:
        layout = point_layout(point)
        ctx.model.check_parallel(layout)
        cfg = _engine_config(ctx, point)
        plan_memory(ctx.model, ctx.gpus[point["gpu"]], layout, parse_dtype(point["dtype"]),
                    gpu_memory_utilization=cfg.gpu_memory_utilization, max_num_batched_tokens=cfg.max_num_batched_tokens,
                    max_num_seqs=cfg.max_num_seqs, block_size=cfg.block_size, state_on_demand=True)
    except InputError as err:
        text = str(err)
        return text.split(": ", 1)[1] if text.startswith("--") and ": " in text else text
    return None


def simulate_point(ctx: Context, point: dict, rate: float | None = None, kind: str | None = None) -> dict:
    """Simulate one configuration at one rate and return its metrics (times in ms, rates per second).

    Parameters
    ----------
    ctx : Context
    point : dict
        ``gpu``, ``tp``, ``dtype``, ``max_num_seqs``, ``chunk`` and ``rate`` (requests/s).
    rate : float, optional
        Override the point's rate (search mode).
    kind : str, optional
        Override the workload's arrival kind (``offline`` for the throughput estimate).

    Returns
    -------
    dict
        Throughput (output tokens/s, requests/s), p50/p90/p99 of TTFT, TPOT and E2E (ms), SLO attainment
        over all requests (rejected ones count as misses), goodput (requests/s meeting the SLO), finished,
        rejected, preemptions and KV blocks.

    Raises
    ------
    KeyboardInterrupt
        When the simulation was cut short (Ctrl-C), so that no partial point is ever recorded.
    """
    from scheduler.engine import Simulator

    wl = dict(ctx.workload)
    wl["kind"] = kind or wl["kind"]
    r = point["rate"] if rate is None else rate
    r = (None if r is None or (isinstance(r, float) and math.isnan(r)) or wl["kind"] in ("offline", "trace", "concurrency")
         else float(r))
    workload = _workload(wl["kind"], wl["num_requests"], r, wl["cv"], wl["trace"], wl["prompt_len"], wl["output_len"],
                         wl["output_dist"], wl["seed"], wl.get("concurrency"))
    sim = Simulator(_predictor(ctx.predictor, ctx.artifacts), ctx.model, ctx.gpus[point["gpu"]], point_layout(point),
                    point["dtype"], _engine_config(ctx, point))
    result = sim.run(workload, record_iterations=False)
    if result.partial:
        raise KeyboardInterrupt
    s = result.summary(ctx.slo_ttft_ms, ctx.slo_tpot_ms)
    attainment = s["slo"]["attainment"]
    attainment = attainment * s["finished"] / s["requests"] if s["finished"] else 0.0
    out = {"output_tokens_per_s": s["output_tokens_per_s"], "requests_per_s": s["requests_per_s"]}
    for metric in ("ttft", "tpot", "e2e"):
        for q in ("p50", "p90", "p99"):
            out[f"{metric}_{q}_ms"] = s[f"{metric}_ms"][q]
    goodput = s["slo"]["goodput_requests_per_s"]
    out.update(slo_attainment=float(attainment), goodput_requests_per_s=float(goodput) if goodput == goodput else 0.0,
               meets_slo=bool(attainment >= ctx.attainment), finished=int(s["finished"]), rejected=int(s["rejected"]),
               preemptions=int(s["preemptions"]), kv_blocks=int(s["kv_blocks"]))
    if wl["kind"] == "offline":
        out["saturated_rps"] = saturated_throughput(result.columns)
    return out


def saturated_throughput(columns: dict) -> float:
    """Requests/s an engine sustains while requests wait, from an offline run (all requests at t = 0).

    Until the last request is first admitted (time T) the queue is never empty, so the engine runs at its
    full batch; afterwards the batch drains and throughput falls. The estimate is the output tokens
    generated in [0, T] (a request part-way through decoding at T counted pro rata of its decode time)
    divided by T, over the mean output tokens per request. When every request is admitted at once
    (T = 0) it falls back to finished requests over the makespan (a lower bound).

    Parameters
    ----------
    columns : dict of arrays
        Per-request results (:attr:`scheduler.metrics.SimResult.columns`): times in s, tokens.
    """
    done = columns["status_code"] == 2
    if not done.any():
        return math.nan
    first_token, finish = columns["first_token_s"][done], columns["finish_s"][done]
    output = columns["output_tokens"][done].astype(float)
    end = float(np.nanmax(columns["first_scheduled_s"][done]))
    if not end > 0:
        span = float(finish.max() - columns["arrival_s"][done].min())
        return float(done.sum()) / span if span > 0 else math.nan
    decode = np.maximum(finish - first_token, 1e-12)
    progress = np.clip((end - first_token) / decode, 0.0, 1.0)
    by_end = np.where(finish <= end, output, np.where(first_token <= end, 1.0 + (output - 1.0) * progress, 0.0))
    return float(by_end.sum() / end / output.mean())


def _grid_task(ctx: Context, index: int, point: dict) -> tuple[int, dict]:
    return index, simulate_point(ctx, point)


@dataclass(frozen=True)
class Bisection:
    """Outcome of :func:`bisect_max_rate` (rates in requests/s).

    Attributes
    ----------
    rate : float
        Highest rate evaluated that met the SLO (0 when even the lower bound failed).
    upper : float or None
        Lowest rate evaluated that failed (None when every rate tried met the SLO: ``rate`` is then a lower
        bound on the true maximum).
    evaluations : tuple of (rate, met)
        Every rate tried, in order.
    """

    rate: float
    upper: float | None
    evaluations: tuple

    @property
    def steps(self) -> int:
        return len(self.evaluations)


def bisect_max_rate(meets: Callable[[float], bool], lo: float, hi: float, *, rel_tol: float = 0.05,
                    max_steps: int = 12, max_expand: int = 4) -> Bisection:
    """Highest rate at which ``meets(rate)`` holds, assuming it holds below some threshold and fails above.

    Parameters
    ----------
    meets : callable
        ``meets(rate) -> bool``; one simulation per call in search mode.
    lo, hi : float
        Initial bracket (requests/s), ``0 < lo < hi``. ``lo`` is checked first (failing there ends the search
        with rate 0); ``hi`` is doubled, at most ``max_expand`` times, while it still meets.
    rel_tol : float
        Stop when ``hi / lo − 1 ≤ rel_tol``: the true threshold lies in [rate, rate × (1 + rel_tol)].
    max_steps : int
        At most this many bisection steps (evaluations after the bracket is found).

    Returns
    -------
    Bisection
    """
    if not (lo > 0 and hi > lo and math.isfinite(hi)):
        raise InputError(f"search: need 0 < lo < hi, got lo={lo!r}, hi={hi!r}")
    evaluations = []

    def check(rate: float) -> bool:
        ok = bool(meets(rate))
        evaluations.append((float(rate), ok))
        return ok

    if not check(lo):
        return Bisection(0.0, lo, tuple(evaluations))
    expansions = 0
    while check(hi):
        lo = hi
        if expansions >= max_expand:
            return Bisection(hi, None, tuple(evaluations))
        hi *= 2.0
        expansions += 1
    for _ in range(max_steps):
        if hi / lo - 1.0 <= rel_tol:
            break
        mid = math.sqrt(lo * hi)  # geometric: the bracket often spans decades at first
        if check(mid):
            lo = mid
        else:
            hi = mid
    return Bisection(lo, hi, tuple(evaluations))


def search_configuration(ctx: Context, config: dict) -> dict:
    """Highest sustainable rate of one configuration under the SLO (see the module docstring).

    Returns
    -------
    dict
        ``capacity_rps`` (the throughput estimate, requests/s), ``max_rate_rps``, ``bracketed`` (a failing
        rate was found above it), ``simulations``, ``status`` (``ok`` or ``infeasible``), ``reason`` and the
        metrics of the run at ``max_rate_rps`` (see :func:`simulate_point`).
    """
    p = ctx.search
    capacity = simulate_point(ctx, {**config, "rate": math.nan}, kind="offline")["saturated_rps"]
    runs: dict[float, dict] = {}

    def meets(rate: float) -> bool:
        runs[rate] = simulate_point(ctx, {**config, "rate": rate})
        return runs[rate]["meets_slo"]

    out = {"capacity_rps": capacity}
    if not (capacity > 0 and math.isfinite(capacity)):
        return out | {"max_rate_rps": 0.0, "bracketed": False, "simulations": 1, "status": "infeasible",
                      "reason": "no request finished in the throughput estimate"}
    found = bisect_max_rate(meets, p["lo_fraction"] * capacity, capacity, rel_tol=p["rel_tol"],
                            max_steps=p["max_steps"], max_expand=p["max_expand"])
    out |= {"max_rate_rps": found.rate, "upper_rate_rps": found.upper if found.upper is not None else math.nan,
            "bracketed": found.upper is not None, "simulations": 1 + found.steps}
    if found.rate <= 0:
        lo = found.evaluations[0][0]
        return out | {"status": "infeasible", "reason": f"SLO missed even at {lo:.3g} requests/s "
                                                        f"({p['lo_fraction']:.0%} of the {capacity:.3g} requests/s "
                                                        f"throughput estimate)"}
    out["load"] = found.rate / capacity
    if found.upper is None:
        reason = f"still met the SLO at {found.rate:.3g} requests/s, the highest rate tried"
    elif found.rate > 1.1 * capacity:
        reason = (f"{found.rate / capacity:.2f}x the {capacity:.3g} requests/s throughput estimate: a run of "
                  f"{ctx.workload['num_requests']} requests is too short to show this overload; raise num_requests")
    else:
        reason = ""
    return out | runs[found.rate] | {"status": "ok", "reason": reason}


def _search_task(ctx: Context, index: int, config: dict) -> tuple[int, dict]:
    return index, search_configuration(ctx, config)


GRID_COLUMNS = ["point", "gpu", "tp", "ep", "pp", "dp_attention", "dtype", "max_num_seqs", "chunk", "rate", "gpus", "cost_usd_per_hour",
                "cost_usd_per_million_output_tokens", "output_tokens_per_s", "requests_per_s",
                "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
                "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "slo_attainment", "goodput_requests_per_s", "meets_slo",
                "finished", "rejected", "preemptions", "kv_blocks", "status", "reason", "pareto", "cheapest", "partial"]
SEARCH_COLUMNS = ["config", "gpu", "tp", "ep", "pp", "dp_attention", "dtype", "max_num_seqs", "chunk", "gpus", "cost_usd_per_hour", "capacity_rps",
                  "max_rate_rps", "upper_rate_rps", "load", "bracketed", "simulations", "cost_usd_per_request",
                  "cost_usd_per_million_output_tokens", "output_tokens_per_s", "requests_per_s", "ttft_p90_ms",
                  "ttft_p99_ms", "tpot_p90_ms", "tpot_p99_ms", "e2e_p90_ms", "slo_attainment", "meets_slo", "status",
                  "reason", "cheapest", "partial"]
_INT_COLUMNS = ("tp", "ep", "pp", "dp_attention", "max_num_seqs", "chunk", "gpus", "finished", "rejected", "preemptions", "kv_blocks", "simulations")


def _per_million(cost_per_hour: float, tokens_per_s: float) -> float:
    return cost_per_hour / (tokens_per_s * 3600.0) * 1e6 if tokens_per_s and tokens_per_s > 0 else math.nan


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    table = pd.DataFrame(rows).reindex(columns=columns)
    for col in columns:
        if col in _INT_COLUMNS:
            table[col] = table[col].fillna(0).astype(np.int64)
        elif col in ("meets_slo", "pareto", "cheapest", "partial", "bracketed"):
            table[col] = np.array([bool(v) if isinstance(v, bool | np.bool_) else False for v in table[col]], bool)
        elif col in ("gpu", "dtype", "status", "reason"):
            table[col] = table[col].fillna("").astype(str)
        elif col not in ("point", "config"):
            table[col] = table[col].astype(float)
    return table.reset_index(drop=True)


def run_sweep(sweep: Sweep, *, search: bool = False, n_jobs: int = 1, dask=None,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run a sweep (grid mode) or the per-configuration rate search (``search=True``).

    Parameters
    ----------
    sweep : Sweep
        From :func:`load_sweep` or :func:`sweep_from_dict`.
    search : bool
        Search mode: the highest sustainable rate of each configuration (the grid's rate axis is ignored).
    n_jobs : int
        joblib processes for local runs (``-1``: one per core); with ``dask="local"``, the worker count
        when > 1 (default 2); ignored for other clusters (their workers decide).
    dask : None, "local", "tcp://host:port" or distributed.Client
        Run on a Dask cluster through joblib's dask backend.
    progress : callable, optional
        ``progress(done, total)`` as points finish. Raising KeyboardInterrupt from it (or Ctrl-C) stops the
        sweep: the result then holds the points finished so far, marked partial.

    Returns
    -------
    SweepResult
    """
    check_execution(n_jobs, dask)
    spec = sweep.spec
    if search and spec.workload.kind not in ("poisson", "gamma"):
        raise InputError(f"--search: needs a poisson or gamma workload (the rate is what is searched), "
                         f"not {spec.workload.kind!r}")
    if not search and spec.workload.kind in ("poisson", "gamma") and spec.grid.rate is None:
        raise InputError(f"{sweep.source}: grid.rate: a {spec.workload.kind} sweep needs rates (requests/s), "
                         f"or run it with --search")
    ctx = Context.of(sweep)
    items = sweep.configurations() if search else sweep.points()
    rows: dict[int, dict] = {}
    todo = []
    for i, item in enumerate(items):
        reason = skip_reason(ctx, item)
        if reason is not None:
            rows[i] = {"status": "skipped", "reason": reason}
        else:
            todo.append((i, item))
    start = time.perf_counter()
    results, interrupted, backend = _execute(_search_task if search else _grid_task, ctx, todo, n_jobs=n_jobs,
                                             dask=dask, total=len(items), done=len(rows), progress=progress)
    wall = time.perf_counter() - start
    for i, metrics in results.items():
        rows[i] = {"status": "ok", "reason": ""} | metrics
    table_rows = []
    for i in sorted(rows):
        item = items[i]
        gpus = point_gpus(item)
        cost = sweep.prices[item["gpu"]] * gpus
        row = {("config" if search else "point"): i, **item, "gpus": gpus, "cost_usd_per_hour": cost} | rows[i]
        row["cost_usd_per_million_output_tokens"] = _per_million(cost, row.get("output_tokens_per_s", math.nan))
        if search:
            rate = row.get("max_rate_rps", math.nan)
            row["cost_usd_per_request"] = cost / (3600.0 * rate) if rate and rate > 0 else math.nan
        row["partial"] = interrupted
        table_rows.append(row)
    table = _frame(table_rows, SEARCH_COLUMNS if search else GRID_COLUMNS)
    if search:
        ok = table[(table["status"] == "ok") & np.isfinite(table["cost_usd_per_request"])]
        best = ok.sort_values(["cost_usd_per_request", "config"], kind="stable").index[0] if len(ok) else None
    else:
        table["pareto"] = pareto_front(np.where(table["status"] == "ok", table["cost_usd_per_million_output_tokens"],
                                                np.nan), table[sweep.pareto_column])
        best = cheapest_meeting_slo(table, latency_column=sweep.pareto_column)
    if best is not None:
        table.loc[best, "cheapest"] = True
    return SweepResult(sweep=sweep, mode="search" if search else "grid", table=table, partial=interrupted,
                       wall_s=wall, backend=backend, total=len(items))
