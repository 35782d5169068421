"""The sweep spec: YAML schema (pydantic), price tables and name resolution (see :mod:`scheduler.sweep`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    policy: Literal["continuous", "prefill_first", "static"] = "continuous"


def _unique(name: str, values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated values {values}")
    return values


class GridSpec(BaseModel):
    """The axes swept; every combination is a point (rates only for poisson/gamma workloads)."""

    model_config = ConfigDict(extra="forbid")
    gpu: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=64)
    tp: list[Annotated[int, Field(strict=True, ge=1, le=64)]] = Field(default=[1], min_length=1, max_length=16)
    # parallel layout axes beside tp (see predictor.parallel); combinations a model cannot shard are skipped
    ep: list[Annotated[int, Field(strict=True, ge=1, le=1024)]] = Field(default=[1], min_length=1, max_length=16)
    pp: list[Annotated[int, Field(strict=True, ge=1, le=64)]] = Field(default=[1], min_length=1, max_length=8)
    dp_attention: list[Annotated[int, Field(strict=True, ge=1, le=1024)]] = Field(default=[1], min_length=1,
                                                                                  max_length=16)
    # default (None): the precision of the checkpoint the model names (predictor.checkpoints), else fp16
    dtype: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1, max_length=16)
    max_num_seqs: list[Annotated[int, Field(strict=True, ge=1, le=65_536)]] = Field(default=[256], min_length=1,
                                                                                    max_length=32)
    max_num_batched_tokens: list[Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] = Field(
        default=[2048], min_length=1, max_length=32)
    rate: list[PosRate] | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _no_repeats(self):
        for name in ("gpu", "tp", "ep", "pp", "dp_attention", "dtype", "max_num_seqs", "max_num_batched_tokens", "rate"):
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
    model: Any  # predictor.model_spec.ModelSpec
    gpus: dict  # catalogue name -> predictor.gpus.GPUSpec, in grid order
    prices: dict  # catalogue name -> USD per GPU-hour
    prices_path: Path
    trace: str | None  # shipped trace name or absolute path
    artifacts: str | None

    @property
    def pareto_column(self) -> str:
        return PARETO_METRICS[self.spec.pareto]

    def configurations(self) -> list[dict]:
        """Grid points without the rate axis, in grid order (GPU, tp, ep, pp, dp_attention, dtype, max_num_seqs,
        chunk)."""
        g = self.spec.grid
        return [{"gpu": gpu, "tp": tp, "ep": ep, "pp": pp, "dp_attention": dp, "dtype": dtype, "max_num_seqs": seqs,
                 "chunk": chunk}
                for gpu in self.gpus for tp in g.tp for ep in g.ep for pp in g.pp for dp in g.dp_attention
                for dtype in g.dtype for seqs in g.max_num_seqs for chunk in g.max_num_batched_tokens]

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
    if spec.grid.dtype is None:  # as the CLI's default: the checkpoint's own precision (fp8 for DeepSeek-V3)
        from predictor.checkpoints import checkpoint_dtype

        grid = spec.grid.model_copy(update={"dtype": [checkpoint_dtype(spec.model) or "fp16"]})
        spec = spec.model_copy(update={"grid": grid})
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
