"""Workloads: request arrivals and prompt/output lengths (all seeded).

A :class:`Workload` is three aligned arrays — arrival time (s), prompt tokens, output tokens — sorted
by arrival. Arrivals: offline (all at t = 0), Poisson or gamma processes at a given rate, or a trace's
own timestamps, or a closed loop (``concurrency``: C clients, each sending its next request when its
previous one completes, as ``vllm bench serve --max-concurrency`` does; the engine sets the send times
while it runs). Lengths: fixed, from a trace, or output lengths sampled from a model's measured
distribution (SamuLLM's no_robots output-length histograms, ``data/samullm/output_lengths.parquet``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.errors import InputError
from predictor.lazy import pandas as pd
from predictor.validate import check_arrivals, check_rate

ARRIVALS = ("offline", "poisson", "gamma", "trace", "concurrency")
SHIPPED_TRACES = ("splitwise_conv", "splitwise_code", "arxiv_summarization")


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: ``arrival_s`` (s), ``prompt_tokens`` and ``output_tokens`` (≥ 1).

    ``concurrency`` (closed loop): when set, ``arrival_s`` is ignored by the engine; request ``i`` is sent
    when a client becomes free (the first ``concurrency`` requests at t = 0, then one per completion, in
    index order), so every request's TTFT counts from its client's send.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"
    concurrency: int | None = None

    def __post_init__(self):
        n = len(self.arrival_s)
        if not (len(self.prompt_tokens) == len(self.output_tokens) == n):
            raise InputError("workload: arrival, prompt and output arrays differ in length")
        if n and (np.any(self.prompt_tokens < 1) or np.any(self.output_tokens < 1)):
            raise InputError("workload: every request needs at least 1 prompt token and 1 output token")
        if n and (np.any(~np.isfinite(self.arrival_s)) or np.any(self.arrival_s < 0)):
            raise InputError("workload: arrival times must be finite and >= 0")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise InputError("workload: arrivals must be sorted")
        if self.concurrency is not None:
            object.__setattr__(self, "concurrency", check_concurrency(self.concurrency))

    def __len__(self) -> int:
        return len(self.arrival_s)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
                             "output_tokens": self.output_tokens})


def _check_count(name: str, value: int, maximum: int = 100_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name}: must be a positive integer, got {value!r}")
    if value > maximum:
        raise InputError(f"{name}: {value} is more than the supported {maximum:,}")
    return int(value)


def check_concurrency(value) -> int:
    """A closed loop's number of clients: a positive integer (else :class:`InputError` naming ``--concurrency``)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"--concurrency: must be a positive integer (clients of a closed loop), got {value!r}")
    if value > 1_000_000:
        raise InputError(f"--concurrency: {value} is more than the supported 1,000,000 clients")
    return int(value)


def measurement_window(num_requests: int, concurrency: int) -> np.ndarray:
    """Request ids (send order) inside a closed loop's measurement window: the first and last ``concurrency``
    requests are warm-up and drain, as benchmark clients discard them; all of them when fewer remain."""
    n, c = int(num_requests), int(concurrency)
    return np.arange(c, n - c) if n > 2 * c else np.arange(n)


def arrivals(kind: str, n: int, *, rate: float | None = None, cv: float = 1.0, seed: int = 0) -> np.ndarray:
    """Arrival times (s) of ``n`` requests.

    Parameters
    ----------
    kind : {"offline", "poisson", "gamma"}
        All at 0; exponential gaps of mean 1/rate; gamma gaps with mean 1/rate and coefficient of
        variation ``cv`` (cv > 1 is burstier than Poisson).
    rate : float
        Requests per second (Poisson and gamma).
    """
    n = _check_count("--num-requests", n)
    if kind == "offline":
        return np.zeros(n)
    if kind not in ("poisson", "gamma"):
        raise InputError(f"--workload: unknown value {kind!r}; allowed: {', '.join(ARRIVALS)}")
    check_arrival_process(kind, rate, cv)
    gaps = arrival_gaps(kind, np.random.default_rng(seed), n, rate, cv)
    return np.cumsum(gaps) - gaps[0]


def check_arrival_process(kind: str, rate: float | None, cv: float) -> None:
    """A ``poisson`` or ``gamma`` process needs a rate > 0 (requests/s) and, for gamma, a cv > 0."""
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise InputError(f"--rate: a {kind} workload needs a rate > 0 requests/s, got {rate!r}")
    if kind == "gamma" and (not np.isfinite(cv) or cv <= 0):
        raise InputError(f"--cv: must be > 0, got {cv!r}")


def arrival_gaps(kind: str, rng: np.random.Generator, n: int, rate: float, cv: float = 1.0) -> np.ndarray:
    """The next ``n`` inter-arrival gaps (s) of a ``poisson`` or ``gamma`` process (checked parameters) drawn from
    ``rng``: drawn in pieces, the same gaps as drawn at once."""
    if kind == "poisson":
        return rng.exponential(1.0 / rate, n)
    shape = 1.0 / cv**2
    return rng.gamma(shape, 1.0 / (rate * shape), n)


@dataclass(frozen=True)
class TraceColumns:
    """A request trace as arrays: ``arrival_s`` (s, NaN where a request has none), ``prompt_tokens`` and
    ``output_tokens``; ``dropped`` counts the rows left out on reading, by reason."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    dropped: dict

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def trace_columns(source: str | Path) -> TraceColumns:
    """A request trace: a shipped name (``splitwise_conv``, ``splitwise_code``, ``arxiv_summarization``; read from
    the array cache, without pandas) or a Vidur/Azure CSV with ``num_prefill_tokens``, ``num_decode_tokens`` and
    optionally ``arrived_at`` (s)."""
    text = str(source)
    if text in SHIPPED_TRACES:
        from features.reference_data import read_trace_columns

        columns = read_trace_columns(text)
        return TraceColumns(np.asarray(columns["arrival_s"], float), np.asarray(columns["prompt_tokens"], np.int64),
                            np.asarray(columns["output_tokens"], np.int64), {})
    from scheduler.trace_file import read_trace_file

    path = Path(text)
    if not path.exists():
        raise InputError(f"--trace: {text!r} is neither a shipped trace ({', '.join(SHIPPED_TRACES)}) nor an existing file")
    if path.is_dir():
        raise InputError(f"--trace: {text!r} is a directory, expected a CSV file")
    table = read_trace_file(path)  # strict: a bad row is an error naming its line
    return TraceColumns(table["arrival_s"].to_numpy(float), table["prompt_tokens"].to_numpy(np.int64),
                        table["output_tokens"].to_numpy(np.int64), dict(table.attrs.get("dropped", {})))


def output_length_distribution(model: str) -> tuple[np.ndarray, np.ndarray]:
    """(output lengths, probabilities) measured for ``model`` (SamuLLM names or catalogue aliases); new arrays on
    every call, the shipped table read once per process."""
    lengths, probs = _output_length_distribution(str(model))
    return lengths.copy(), probs.copy()


@functools.lru_cache(maxsize=64)
def _output_length_distribution(model: str) -> tuple[np.ndarray, np.ndarray]:
    from features.reference_data import read_output_length_columns
    from predictor.models import resolve_model_name

    table = read_output_length_columns()
    names = sorted(set(table["model"].tolist()))
    chosen = model if model in names else None
    if chosen is None:
        key = resolve_model_name(model)
        matches = [n for n in names if resolve_model_name(n) == key] if key else []
        base = [n for n in matches if "chat" not in n.lower() and "instruct" not in n.lower()]
        chosen = (base or matches or [None])[0]
    if chosen is None:
        raise InputError(f"--output-dist: no measured output-length distribution for {model!r}; available: {', '.join(names)}")
    rows = table["model"] == chosen
    return table["output_len"][rows].astype(np.int64), table["prob"][rows].astype(float)


def sample_output_lengths(model: str, n: int, seed: int = 0, max_len: int | None = None) -> np.ndarray:
    """``n`` output lengths drawn from ``model``'s measured distribution (optionally capped at ``max_len``)."""
    lengths, probs = output_length_distribution(model)
    out = np.random.default_rng(seed).choice(lengths, size=n, p=probs / probs.sum())
    return np.minimum(out, max_len) if max_len else out


def build_workload(
    kind: str = "offline",
    num_requests: int | None = None,
    *,
    rate: float | None = None,
    cv: float = 1.0,
    trace: str | Path | None = None,
    prompt_len: int | None = None,
    output_len: int | None = None,
    output_dist: str | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    stagger: bool = True,
) -> Workload:
    """Assemble a workload from an arrival process and length sources.

    Lengths: ``prompt_len`` / ``output_len`` fix them; otherwise they come from ``trace`` (default
    ``splitwise_conv``); ``output_dist`` (a model name) samples output lengths from its measured
    distribution instead. ``kind="trace"`` replays the trace's own arrival times. ``kind="concurrency"``
    is a closed loop of ``concurrency`` clients (send times set by the engine; see :class:`Workload`).
    With ``stagger`` (default) the clients' first requests — warm-up, outside the measurement window —
    generate 1/C, 2/C, …, C/C of their output length, so that the clients' phases are spread over a
    request's lifetime as in a benchmark's steady state instead of marching in lock-step (identical
    requests sent together would otherwise prefill together and finish together forever).
    """
    if kind not in ARRIVALS:
        raise InputError(f"--workload: unknown value {kind!r}; allowed: {', '.join(ARRIVALS)}")
    if kind == "concurrency":
        if concurrency is None:
            raise InputError("--concurrency: a concurrency workload needs the number of clients (a positive integer)")
        concurrency = check_concurrency(concurrency)
    elif concurrency is not None:
        raise InputError(f"--concurrency: only for --workload concurrency, not {kind!r}")
    # a trace that was named is always read (and so checked), even when fixed lengths leave it unused
    needs_trace = (kind == "trace" or trace is not None or prompt_len is None
                   or (output_len is None and output_dist is None))
    table = trace_columns(trace or "splitwise_conv") if needs_trace else None
    if table is not None and len(table) == 0:
        dropped = table.dropped
        why = f" ({', '.join(f'{k}: {v}' for k, v in dropped.items())} rows dropped)" if dropped else ""
        raise InputError(f"--trace: {str(trace or 'splitwise_conv')!r} has no valid requests (every row needs whole "
                         f"num_prefill_tokens and num_decode_tokens >= 1){why}")
    if kind == "trace" and np.isnan(table.arrival_s).all():
        raise InputError(f"--trace: {trace or 'splitwise_conv'!r} has no arrival times; use --workload poisson or offline")
    if kind == "trace" and np.isnan(table.arrival_s).any():
        missing = int(np.isnan(table.arrival_s).sum())
        raise InputError(f"--trace: {str(trace or 'splitwise_conv')!r} has {missing} request(s) without an arrival "
                         f"time (arrived_at); fill them in, or use --workload poisson or offline")
    if num_requests is None:
        if table is None:
            raise InputError("--num-requests: required unless lengths come from a trace")
        num_requests = len(table)
    n = _check_count("--num-requests", num_requests)
    rng_seed = seed
    if table is not None:
        rows = np.arange(n) % len(table)  # a trace shorter than n is replayed cyclically
    if kind == "trace":
        t = table.arrival_s[rows]
        span = t.max() - t.min() if len(t) else 0.0
        laps = np.arange(n) // max(len(set(rows)), 1)
        arrival = (t - t.min()) + laps * (span + 1.0)
    elif kind == "concurrency":
        arrival = np.zeros(n)  # placeholders: the engine sends each request when a client is free
    else:
        check_rate(rate if kind in ("poisson", "gamma") else None)
        arrival = arrivals(kind, n, rate=rate, cv=cv, seed=rng_seed)
    check_arrivals(arrival, "--trace" if kind == "trace" else "--rate")
    if prompt_len is not None:
        prompts = np.full(n, _check_count("--prompt-len", prompt_len, 10_000_000), dtype=np.int64)
    else:
        prompts = table.prompt_tokens[rows]
    if output_dist is not None:
        outputs = sample_output_lengths(output_dist, n, seed=rng_seed + 1)
    elif output_len is not None:
        outputs = np.full(n, _check_count("--output-len", output_len, 10_000_000), dtype=np.int64)
    else:
        outputs = table.output_tokens[rows]
    if kind == "concurrency" and stagger:
        first = min(concurrency, n)
        outputs = outputs.copy()
        outputs[:first] = np.maximum(1, np.ceil(outputs[:first] * np.arange(1, first + 1) / concurrency)).astype(np.int64)
    order = np.argsort(arrival, kind="stable")
    name = kind if kind != "trace" else f"trace:{trace or 'splitwise_conv'}"
    if kind == "concurrency":
        name = f"concurrency:{concurrency}"
    return Workload(arrival[order], prompts[order].astype(np.int64), outputs[order].astype(np.int64), name,
                    concurrency)
