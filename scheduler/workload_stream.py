"""Open-loop workloads generated chunk by chunk, for runs too long to hold every request at once.

A :class:`StreamedWorkload` describes the same requests as :func:`scheduler.workload.build_workload` with the
same arguments (identical arrays, same seed: the random draws are taken in the same order, only in pieces) but
never materialises them: :meth:`StreamedWorkload.chunks` yields ``(arrival_s, prompt_tokens, output_tokens)``
a chunk at a time. :meth:`scheduler.engine.Simulator.run` feeds such a workload through a window of engine
state (:mod:`scheduler.engine_window`), so a run's memory does not grow with its number of requests.

Supported: ``offline``, ``poisson`` and ``gamma`` arrivals, with fixed lengths, a trace's lengths (replayed
cyclically) or output lengths sampled from a model's measured distribution. Trace replay (its arrivals are
re-sorted over laps) and closed loops (send times depend on the run) are not streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.errors import InputError
from predictor.validate import check_arrivals, check_rate
from scheduler.workload import (_check_count, arrival_gaps, check_arrival_process, output_length_distribution,
                                trace_columns)

STREAMED_ARRIVALS = ("offline", "poisson", "gamma")


@dataclass(frozen=True)
class StreamedWorkload:
    """``num_requests`` requests of an open-loop arrival process, generated lazily (see the module docstring).

    Build it with :func:`stream_workload` (which validates every argument as ``build_workload`` does).
    """

    kind: str
    num_requests: int
    rate: float | None = None
    cv: float = 1.0
    trace: str | Path | None = None
    prompt_len: int | None = None
    output_len: int | None = None
    output_dist: str | None = None
    seed: int = 0
    concurrency = None  # open loop only (the engine checks this attribute on every workload)

    @property
    def name(self) -> str:
        return self.kind

    def __len__(self) -> int:
        return self.num_requests

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(arrival_s, prompt_tokens, output_tokens)`` of at most ``size`` requests at a time, in arrival order;
        concatenated, exactly ``build_workload``'s arrays for the same arguments."""
        n = self.num_requests
        table = self._table()
        arrival_rng = np.random.default_rng(self.seed)
        output = (output_length_distribution(self.output_dist) if self.output_dist is not None else None)
        output_rng = np.random.default_rng(self.seed + 1)
        carry, first_gap = 0.0, None
        for start in range(0, n, size):
            k = min(size, n - start)
            if self.kind == "offline":
                arrival = np.zeros(k)
            else:
                gaps = arrival_gaps(self.kind, arrival_rng, k, self.rate, self.cv)
                if first_gap is None:
                    first_gap = float(gaps[0])
                gaps[0] += carry  # a sequential running sum, as np.cumsum over the whole array
                arrival = np.cumsum(gaps)
                carry = float(arrival[-1])
                arrival -= first_gap
            check_arrivals(arrival, "--rate")
            rows = np.arange(start, start + k) % len(table) if table is not None else None
            prompts = (np.full(k, self.prompt_len, np.int64) if self.prompt_len is not None
                       else table.prompt_tokens[rows])
            if output is not None:
                lengths, probs = output
                outputs = output_rng.choice(lengths, size=k, p=probs / probs.sum()).astype(np.int64)
            elif self.output_len is not None:
                outputs = np.full(k, self.output_len, np.int64)
            else:
                outputs = table.output_tokens[rows]
            yield arrival, prompts, outputs

    def _table(self):
        needs = self.trace is not None or self.prompt_len is None or (self.output_len is None and self.output_dist is None)
        return trace_columns(self.trace or "splitwise_conv") if needs else None


def stream_workload(kind: str, num_requests: int, *, rate: float | None = None, cv: float = 1.0,
                    trace: str | Path | None = None, prompt_len: int | None = None, output_len: int | None = None,
                    output_dist: str | None = None, seed: int = 0) -> StreamedWorkload:
    """A validated :class:`StreamedWorkload` (arguments as :func:`scheduler.workload.build_workload`)."""
    if kind not in STREAMED_ARRIVALS:
        raise InputError(f"--workload: {kind!r} cannot be streamed; allowed: {', '.join(STREAMED_ARRIVALS)}")
    n = _check_count("--num-requests", num_requests)
    if kind != "offline":  # as build_workload: the plausible range first, then the process's own parameters
        check_rate(rate)
        check_arrival_process(kind, rate, cv)
    if prompt_len is not None:
        prompt_len = _check_count("--prompt-len", prompt_len, 10_000_000)
    if output_len is not None:
        output_len = _check_count("--output-len", output_len, 10_000_000)
    workload = StreamedWorkload(kind, n, rate, cv, trace, prompt_len, output_len, output_dist, int(seed))
    table = workload._table()
    if table is not None and len(table) == 0:
        raise InputError(f"--trace: {str(trace or 'splitwise_conv')!r} has no valid requests")
    if output_dist is not None:
        output_length_distribution(output_dist)  # an unknown model is an error now, not in the middle of a run
    return workload
