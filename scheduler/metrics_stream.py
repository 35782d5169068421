"""Request statistics of a windowed run, accumulated as requests retire (memory flat in the number of requests).

A windowed run (:mod:`scheduler.engine_window`) drops each finished request's row from the engine's state, so
the per-request part of :meth:`scheduler.metrics.SimResult.summary` is accumulated here instead: counts, sums,
the first arrival and last finish are exact; the p50/p90/p99 of TTFT, TPOT, end-to-end latency and queueing
delay come from histograms over log-spaced bins (the engine's time-between-tokens bins: 1 µs to 10,000 s,
4,000 bins, each 0.58% wide), each order statistic taken at its bin's geometric middle and interpolated as ``np.quantile`` does,
so within 0.3% of the exact percentile (values of at most 1 µs, e.g. no queueing, count as 0). SLO attainment needs its thresholds
before the run, since per-request latencies are not kept.
"""

from __future__ import annotations

import math

import numpy as np

from predictor.errors import InputError
from scheduler.engine_state import ITL_EDGES_S
from scheduler.metrics import slo_entry, slo_met

LATENCIES = ("ttft", "tpot", "e2e", "queue")
_MIDDLES_S = np.concatenate([[0.0], np.sqrt(ITL_EDGES_S[:-1] * ITL_EDGES_S[1:]), [ITL_EDGES_S[-1]]])


def _hist_quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile (s) of the values counted in ``counts`` (bins of ITL_EDGES_S; NaN when empty)."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    rank = q * (total - 1)  # np.quantile's: between the order statistics floor(rank) and floor(rank) + 1
    low, high = np.searchsorted(np.cumsum(counts), [math.floor(rank), min(math.floor(rank) + 1, total - 1)],
                                side="right")
    frac = rank - math.floor(rank)
    return float(_MIDDLES_S[low] + frac * (_MIDDLES_S[high] - _MIDDLES_S[low]))


class RequestTotals:
    """Summary statistics over retired requests' rows (see the module docstring).

    Parameters
    ----------
    slo_ttft_ms, slo_tpot_ms : float, optional
        SLO thresholds (ms) whose attainment and goodput to count.
    """

    def __init__(self, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None):
        self.slo_ms = (slo_ttft_ms, slo_tpot_ms)
        self.requests = self.finished = self.rejected = self.preemptions = self.slo_ok = 0
        self.output_tokens = 0
        self.first_arrival_s, self.last_finish_s = math.inf, -math.inf
        self.sums_ms = dict.fromkeys(LATENCIES, 0.0)
        self.counts = {name: np.zeros(len(ITL_EDGES_S) + 1, np.int64) for name in LATENCIES}
        self.reject_reasons: dict[str, int] = {}

    def add(self, columns: dict) -> None:
        """Count the rows ``columns`` (as :func:`scheduler.metrics.request_columns` gives them)."""
        status = columns["status_code"]
        done = status == 2
        self.requests += int(status.size)
        self.finished += int(done.sum())
        rejected = status == 3
        self.rejected += int(rejected.sum())
        for reason in columns["reject_reason"][rejected].tolist():
            self.reject_reasons[str(reason)] = self.reject_reasons.get(str(reason), 0) + 1
        self.preemptions += int(columns["preemptions"].sum())
        if status.size:
            self.first_arrival_s = min(self.first_arrival_s, float(columns["arrival_s"].min()))
        if not done.any():
            return
        self.last_finish_s = max(self.last_finish_s, float(columns["finish_s"][done].max()))
        self.output_tokens += int(columns["output_tokens"][done].sum())
        for name in LATENCIES:
            values = columns[f"{name}_s"][done]
            values = values[np.isfinite(values)]
            self.sums_ms[name] += float((values * 1e3).sum())
            self.counts[name] += np.bincount(np.searchsorted(ITL_EDGES_S, values), minlength=len(ITL_EDGES_S) + 1)
        self.slo_ok += slo_met(columns, done, *self.slo_ms)

    def fields(self, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
        """The per-request entries of a summary (keys as :func:`scheduler.metrics.request_fields`)."""
        if (slo_ttft_ms, slo_tpot_ms) != self.slo_ms:
            raise InputError(f"slo: a windowed run counts SLO attainment only for the thresholds it was given "
                             f"(ttft_ms, tpot_ms) = {self.slo_ms}, not {(slo_ttft_ms, slo_tpot_ms)}")
        makespan = self.last_finish_s - self.first_arrival_s if self.finished else 0.0
        out = {"requests": self.requests, "finished": self.finished, "rejected": self.rejected, "makespan_s": makespan}
        for name in LATENCIES:
            counts = self.counts[name]
            total = int(counts.sum())
            out[f"{name}_ms"] = {"mean": self.sums_ms[name] / total if total else float("nan")} | {
                f"p{int(q * 100)}": _hist_quantile(counts, q) * 1e3 for q in (0.5, 0.9, 0.99)}
        out["output_tokens_per_s"] = self.output_tokens / makespan if makespan > 0 else float("nan")
        out["requests_per_s"] = self.finished / makespan if makespan > 0 else float("nan")
        out["slo"] = slo_entry(slo_ttft_ms, slo_tpot_ms, self.slo_ok, self.finished, makespan)
        out["preemptions"] = self.preemptions
        return out

    def cdf(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values in ms at the bins' middles, cumulative fraction) of latency ``name`` (``ttft``, ``tpot``, …)."""
        counts = self.counts[name]
        if not counts.sum():
            return np.zeros(0), np.zeros(0)
        used = counts > 0
        return _MIDDLES_S[used] * 1e3, np.cumsum(counts)[used] / counts.sum()
