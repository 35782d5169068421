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

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from predictor.atomic import atomic_path, atomic_write, save_figure
from predictor.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRICES = REPO_ROOT / "data" / "gpu_prices.yaml"
PARETO_METRICS = {"ttft_p90": "ttft_p90_ms", "tpot_p99": "tpot_p99_ms"}
MAX_POINTS = 100_000

PosInt = Annotated[int, Field(strict=True, ge=1)]
PosRate = Annotated[float, Field(gt=0, allow_inf_nan=False)]


# --------------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------------
class WorkloadSpec(BaseModel):
    """Requests of every point (seeded, so every point sees the same lengths; arrivals scale with the rate).

    ``kind``: ``poisson`` or ``gamma`` arrivals at the grid's rates (requests/s), ``offline`` (all at
    t = 0), ``trace`` (the trace's own timestamps) or ``concurrency`` (a closed loop of ``concurrency``
    clients). Lengths: ``prompt_len`` / ``output_len`` (tokens)
    fix them, else they come from ``trace`` (a shipped trace name or a Vidur/Azure CSV; default
    ``splitwise_conv``); ``output_dist`` samples output lengths from a model's measured distribution.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["poisson", "gamma", "offline", "trace", "concurrency"] = "poisson"
    concurrency: int | None = Field(default=None, strict=True, ge=1, le=1_000_000)
    num_requests: int = Field(default=300, strict=True, ge=1, le=1_000_000)
    trace: str | None = Field(default=None, min_length=1)
    prompt_len: int | None = Field(default=None, strict=True, ge=1, le=1_000_000)
    output_len: int | None = Field(default=None, strict=True, ge=1, le=1_000_000)
    output_dist: str | None = Field(default=None, min_length=1)
    cv: float = Field(default=1.0, gt=0, le=100, allow_inf_nan=False)
    seed: int = Field(default=0, strict=True, ge=0)


class SLOSpec(BaseModel):
    """Per-request latency targets (ms) and the fraction of requests that must meet both."""

    model_config = ConfigDict(extra="forbid")
    ttft_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tpot_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    attainment: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _some_target(self):
        if self.ttft_ms is None and self.tpot_ms is None:
            raise ValueError("give ttft_ms, tpot_ms or both")
        return self


class EngineSpec(BaseModel):
    """Engine knobs held fixed over the grid (see :class:`scheduler.engine.EngineConfig`)."""

    model_config = ConfigDict(extra="forbid")
    block_size: int = Field(default=16, strict=True, ge=1, le=1024)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    chunked_prefill: bool = True
    policy: Literal["continuous", "static"] = "continuous"


def _unique(name: str, values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated values {values}")
    return values


class GridSpec(BaseModel):
    """The axes swept; every combination is a point (rates only for poisson/gamma workloads)."""

    model_config = ConfigDict(extra="forbid")
    gpu: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=64)
    tp: list[Annotated[int, Field(strict=True, ge=1, le=64)]] = Field(default=[1], min_length=1, max_length=16)
    dtype: list[Annotated[str, Field(min_length=1)]] = Field(default=["fp16"], min_length=1, max_length=16)
    max_num_seqs: list[Annotated[int, Field(strict=True, ge=1, le=65_536)]] = Field(default=[256], min_length=1,
                                                                                    max_length=32)
    max_num_batched_tokens: list[Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] = Field(
        default=[2048], min_length=1, max_length=32)
    rate: list[PosRate] | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _no_repeats(self):
        for name in ("gpu", "tp", "dtype", "max_num_seqs", "max_num_batched_tokens", "rate"):
            values = getattr(self, name)
            if values is not None:
                _unique(name, [v.lower() if isinstance(v, str) else v for v in values])
        return self


class SearchSpec(BaseModel):
    """Bisection on the rate (search mode): stop at ``hi / lo − 1 ≤ rel_tol`` or after ``max_steps`` steps.

    ``lo_fraction`` × the throughput estimate is the lower bound; the upper bound (the estimate) is doubled at
    most ``max_expand`` times while it still meets the SLO.
    """

    model_config = ConfigDict(extra="forbid")
    rel_tol: float = Field(default=0.05, gt=0, le=1)
    max_steps: int = Field(default=12, strict=True, ge=1, le=60)
    lo_fraction: float = Field(default=0.02, gt=0, lt=1)
    max_expand: int = Field(default=4, strict=True, ge=0, le=20)


class SweepSpec(BaseModel):
    """The validated YAML document (see ``examples/sweep.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="sweep", min_length=1, max_length=128)
    model: str = Field(min_length=1)
    predictor: Literal["hybrid", "roofline"] = "hybrid"
    artifacts: str | None = Field(default=None, min_length=1)
    gpu_file: str | None = Field(default=None, min_length=1)
    prices: str | None = Field(default=None, min_length=1)
    pareto: Literal["ttft_p90", "tpot_p99"] = "ttft_p90"
    workload: WorkloadSpec
    slo: SLOSpec
    engine: EngineSpec = EngineSpec()
    grid: GridSpec
    search: SearchSpec = SearchSpec()

    @model_validator(mode="after")
    def _rates_match_workload(self):
        timed = self.workload.kind in ("poisson", "gamma")
        if not timed and self.grid.rate is not None:
            raise ValueError(f"grid.rate: only for poisson or gamma workloads, not {self.workload.kind!r}")
        if (self.workload.kind == "concurrency") != (self.workload.concurrency is not None):
            raise ValueError("workload.concurrency: give it (clients, >= 1) exactly when kind is concurrency")
        return self


# --------------------------------------------------------------------------------------------------
# Loading and resolving
# --------------------------------------------------------------------------------------------------
def _resolve_path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def load_prices(path: str | Path, gpu_file: str | Path | None = None) -> dict[str, float]:
    """Read a price table: USD per GPU-hour keyed by canonical GPU name.

    Parameters
    ----------
    path : str or Path
        YAML with a ``prices`` mapping (GPU name or alias → USD per GPU-hour), as ``data/gpu_prices.yaml``.
    gpu_file : path, optional
        A user GPU file whose names may appear in the table too.

    Raises
    ------
    InputError
        Missing or unreadable file, a non-positive price, or a GPU name no catalogue knows.
    """
    from predictor.gpus import get_gpu

    path = Path(path)
    raw = _read_yaml(path, "prices", "a YAML price table")
    table = raw.get("prices") if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not table:
        raise InputError(f"prices: {str(path)!r} needs a non-empty `prices:` mapping of GPU name to USD per GPU-hour")
    out: dict[str, float] = {}
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise InputError(f"prices: {str(path)!r}: {name}: expected a positive number of USD per GPU-hour, "
                             f"got {value!r}")
        try:
            gpu = get_gpu(str(name), gpu_file)
        except InputError as err:
            raise InputError(f"prices: {str(path)!r}: {str(err).split(': ', 1)[-1]}") from None
        out[gpu.name] = float(value)
    return out


@dataclass(frozen=True)
class Sweep:
    """A validated sweep with its names resolved (model, GPUs, price per GPU-hour, file paths)."""

    spec: SweepSpec
    source: str
    model: Any  # predictor.models.ModelSpec
    gpus: dict  # catalogue name -> predictor.gpus.GPUSpec, in grid order
    prices: dict  # catalogue name -> USD per GPU-hour
    prices_path: Path
    trace: str | None  # shipped trace name or absolute path
    artifacts: str | None

    @property
    def pareto_column(self) -> str:
        return PARETO_METRICS[self.spec.pareto]

    def configurations(self) -> list[dict]:
        """Grid points without the rate axis, in grid order (GPU, tp, dtype, max_num_seqs, chunk)."""
        g = self.spec.grid
        return [{"gpu": gpu, "tp": tp, "dtype": dtype, "max_num_seqs": seqs, "chunk": chunk}
                for gpu in self.gpus for tp in g.tp for dtype in g.dtype for seqs in g.max_num_seqs
                for chunk in g.max_num_batched_tokens]

    def points(self) -> list[dict]:
        """Every grid point (a configuration at a rate; rate NaN for offline and trace workloads)."""
        rates = self.spec.grid.rate if self.spec.grid.rate is not None else [math.nan]
        return [{**c, "rate": float(r)} for c in self.configurations() for r in rates]


def sweep_from_dict(raw: object, source: str = "sweep", base_dir: str | Path | None = None) -> Sweep:
    """Validate a sweep spec given as a mapping (relative paths resolve against ``base_dir``, default cwd).

    Raises
    ------
    InputError
        One line naming the field and the problem.
    """
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from predictor.precision import parse_dtype
    from scheduler.workload import SHIPPED_TRACES, output_length_distribution

    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = SweepSpec(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        msg = first["msg"].removeprefix("Value error, ")
        got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
        raise InputError(f"{source}: {loc}: {msg}{got}") from None
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    def fail(field_name: str, err: InputError):
        return InputError(f"{source}: {field_name}: {str(err).split(': ', 1)[-1]}")

    gpu_file = None
    if spec.gpu_file is not None:
        gpu_file = _resolve_path(spec.gpu_file, base)
        if not gpu_file.is_file():
            raise InputError(f"{source}: gpu_file: file {str(gpu_file)!r} does not exist")
    try:
        model = get_model(spec.model)
    except InputError as err:
        raise fail("model", err) from None
    gpus = {}
    for name in spec.grid.gpu:
        try:
            gpu = get_gpu(name, gpu_file)
        except InputError as err:
            raise fail("grid.gpu", err) from None
        if gpu.name in gpus:
            raise InputError(f"{source}: grid.gpu: {spec.grid.gpu} names {gpu.name!r} twice (an alias)")
        gpus[gpu.name] = gpu
    for dtype in spec.grid.dtype:
        try:
            parse_dtype(dtype)
        except InputError as err:
            raise fail("grid.dtype", err) from None
    if len({parse_dtype(d) for d in spec.grid.dtype}) != len(spec.grid.dtype):
        raise InputError(f"{source}: grid.dtype: {spec.grid.dtype} names the same precision twice")
    prices_path = _resolve_path(spec.prices, base) if spec.prices is not None else DEFAULT_PRICES
    try:
        table = load_prices(prices_path, gpu_file)
    except InputError as err:
        raise InputError(f"{source}: {err}") from None
    prices = {}
    for name in gpus:
        if name not in table:
            raise InputError(f"{source}: prices: {str(prices_path)!r} has no price for GPU {name!r}; add it "
                             f"(USD per GPU-hour)")
        prices[name] = table[name]
    wl = spec.workload
    trace = wl.trace
    if trace is not None and trace not in SHIPPED_TRACES:
        path = _resolve_path(trace, base)
        if not path.is_file():
            raise InputError(f"{source}: workload.trace: {trace!r} is neither a shipped trace "
                             f"({', '.join(SHIPPED_TRACES)}) nor an existing file")
        trace = str(path.resolve())
    if wl.output_dist is not None:
        try:
            output_length_distribution(wl.output_dist)
        except InputError as err:
            raise fail("workload.output_dist", err) from None
    artifacts = spec.artifacts
    if artifacts is not None and not artifacts.startswith(("models:/", "runs:/")):
        path = _resolve_path(artifacts, base)
        if not path.is_dir():
            raise InputError(f"{source}: artifacts: folder {str(path)!r} does not exist")
        artifacts = str(path.resolve())
    sweep = Sweep(spec=spec, source=source, model=model, gpus=gpus, prices=prices, prices_path=prices_path,
                  trace=trace, artifacts=artifacts)
    n = len(sweep.points())
    if n > MAX_POINTS:
        raise InputError(f"{source}: grid: {n:,} points is more than the supported {MAX_POINTS:,}")
    return sweep


def _read_yaml(path: Path, field_name: str, what: str):
    """Parse a user YAML file (one-line :class:`InputError` for a missing, binary or invalid file)."""
    try:  # the project's size-limited loader that refuses duplicate keys, where present
        from predictor.safe_yaml import load_yaml_file
    except ImportError:
        load_yaml_file = None
    if load_yaml_file is not None:
        return load_yaml_file(path, field_name, what)
    if not path.exists():
        raise InputError(f"{field_name}: file {str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"{field_name}: {str(path)!r} is a directory, expected {what}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{field_name}: {str(path)!r} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise InputError(f"{field_name}: {str(path)!r} is not valid YAML"
                         + (f" (line {line + 1})" if line is not None else "")) from None


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep YAML file (relative paths inside resolve against the file's folder).

    Raises
    ------
    InputError
        Missing file, invalid YAML or any invalid field, as one line.
    """
    path = Path(path)
    raw = _read_yaml(path, "sweep", "a YAML sweep spec")
    return sweep_from_dict(raw, source=path.name, base_dir=path.resolve().parent)


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


def skip_reason(ctx: Context, point: dict) -> str | None:
    """Why a configuration cannot run (``tp`` does not shard the model, or it does not fit), else None."""
    from predictor.memory import plan_memory
    from predictor.precision import parse_dtype

    try:
        ctx.model.check_tp(point["tp"])
        cfg = _engine_config(ctx, point)
        plan_memory(ctx.model, ctx.gpus[point["gpu"]], point["tp"], parse_dtype(point["dtype"]),
                    gpu_memory_utilization=cfg.gpu_memory_utilization, max_num_batched_tokens=cfg.max_num_batched_tokens,
                    max_num_seqs=cfg.max_num_seqs, block_size=cfg.block_size)
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
    sim = Simulator(_predictor(ctx.predictor, ctx.artifacts), ctx.model, ctx.gpus[point["gpu"]], point["tp"],
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


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------
def check_execution(n_jobs: int, dask) -> None:
    """Raise :class:`InputError` for an ``n_jobs`` or ``dask`` value :func:`run_sweep` cannot use."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or (n_jobs < 1 and n_jobs != -1):
        raise InputError(f"--n-jobs: must be a positive integer or -1 (all cores), got {n_jobs!r}")
    if dask is None or not isinstance(dask, str):
        return
    if dask != "local" and not dask.startswith(("tcp://", "tls://")):
        raise InputError(f"--dask: expected 'local' or a scheduler address like tcp://host:8786, got {dask!r}")


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (one line) when nothing listens at a ``tcp://host:port`` scheduler address."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise InputError(f"--dask: expected tcp://host:port, got {address!r}")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise InputError(f"--dask: cannot connect to a Dask scheduler at {address} ({err.strerror or err})") from None


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while child processes start (they keep ignoring it); restore the handler after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _parallel(n_jobs: int, dask) -> Iterator[tuple[dict, str]]:
    """joblib settings for the chosen backend: (Parallel kwargs, a description)."""
    import joblib

    from predictor.cpus import capped_workers

    if dask is None or (isinstance(dask, str) and dask == "local"):
        n_jobs, warning = capped_workers(n_jobs, "n_jobs")
        if warning:
            import warnings

            warnings.warn(warning, RuntimeWarning, stacklevel=2)
    if dask is None:
        yield {"n_jobs": n_jobs}, f"joblib (n_jobs={n_jobs})"
        return
    import logging

    from distributed import Client, LocalCluster

    owned = []
    try:
        if isinstance(dask, str) and dask == "local":
            workers = n_jobs if n_jobs > 1 else 2
            with _sigint_ignored():  # worker processes inherit it: Ctrl-C reaches only this process, which stops
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0", silence_logs=logging.ERROR)
            owned.append(cluster)
            client = Client(cluster)
            owned.insert(0, client)
            label = f"dask LocalCluster ({workers} workers × 1 thread)"
        elif isinstance(dask, str):
            _probe(dask)
            try:
                client = Client(dask, timeout="15s")
            except (OSError, TimeoutError) as err:
                raise InputError(f"--dask: cannot connect to a Dask scheduler at {dask} ({type(err).__name__}: "
                                 f"{' '.join(str(err).split())[:120]})") from None
            owned.append(client)
            label = f"dask cluster at {dask}"
        else:
            client = dask  # a distributed.Client the caller owns
            label = "dask client"
        threads = sum(client.nthreads().values())
        with joblib.parallel_backend("dask", client=client, wait_for_workers_timeout=60):
            yield {"n_jobs": -1}, f"{label}, {threads} worker threads"
    finally:
        for obj in owned:
            with contextlib.suppress(Exception):
                obj.close()


def _execute(task, ctx: Context, items: list[tuple[int, dict]], *, n_jobs: int, dask, total: int, done: int,
             progress: Callable[[int, int], None] | None) -> tuple[dict[int, dict], bool, str]:
    """Run ``task(ctx, index, item)`` over ``items``; return ({index: result}, interrupted, backend)."""
    from joblib import Parallel, delayed

    results: dict[int, dict] = {}
    interrupted = False
    with _parallel(n_jobs, dask) as (kwargs, backend):
        gen = None
        try:
            if progress is not None:
                progress(done, total)
            if items:
                gen = Parallel(return_as="generator_unordered", **kwargs)(delayed(task)(ctx, i, item)
                                                                           for i, item in items)
                for index, row in gen:
                    results[index] = row
                    if progress is not None:
                        progress(done + len(results), total)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if gen is not None:
                with contextlib.suppress(Exception):
                    gen.close()
    return results, interrupted, backend


GRID_COLUMNS = ["point", "gpu", "tp", "dtype", "max_num_seqs", "chunk", "rate", "gpus", "cost_usd_per_hour",
                "cost_usd_per_million_output_tokens", "output_tokens_per_s", "requests_per_s",
                "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
                "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "slo_attainment", "goodput_requests_per_s", "meets_slo",
                "finished", "rejected", "preemptions", "kv_blocks", "status", "reason", "pareto", "cheapest", "partial"]
SEARCH_COLUMNS = ["config", "gpu", "tp", "dtype", "max_num_seqs", "chunk", "gpus", "cost_usd_per_hour", "capacity_rps",
                  "max_rate_rps", "upper_rate_rps", "load", "bracketed", "simulations", "cost_usd_per_request",
                  "cost_usd_per_million_output_tokens", "output_tokens_per_s", "requests_per_s", "ttft_p90_ms",
                  "ttft_p99_ms", "tpot_p90_ms", "tpot_p99_ms", "e2e_p90_ms", "slo_attainment", "meets_slo", "status",
                  "reason", "cheapest", "partial"]
_INT_COLUMNS = ("tp", "max_num_seqs", "chunk", "gpus", "finished", "rejected", "preemptions", "kv_blocks", "simulations")


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
        cost = sweep.prices[item["gpu"]] * item["tp"]
        row = {("config" if search else "point"): i, **item, "gpus": item["tp"], "cost_usd_per_hour": cost} | rows[i]
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

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the table (Parquet and CSV), ``summary.json`` and the plot into ``out_dir`` (atomically).

        Grid mode writes ``results.parquet``, ``results.csv`` and ``pareto.png``; search mode
        ``search.parquet``, ``search.csv`` and ``search.png``.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out: {str(out)!r} is a file, expected a folder")
        out.mkdir(parents=True, exist_ok=True)
        stem = "results" if self.mode == "grid" else "search"
        files = {"parquet": out / f"{stem}.parquet", "csv": out / f"{stem}.csv", "plot": out / f"{stem if stem == 'search' else 'pareto'}.png",
                 "summary": out / "summary.json"}
        with atomic_path(files["parquet"]) as tmp:
            self.table.to_parquet(tmp, index=False)
        with atomic_path(files["csv"]) as tmp:
            self.table.to_csv(tmp, index=False)
        self.plot(files["plot"])
        self.files = files
        atomic_write(files["summary"], json.dumps(self.summary(), indent=2) + "\n")
        return files

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
