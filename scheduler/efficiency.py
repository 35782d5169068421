"""Efficiency of a simulated run: MFU, MBU and roofline distance per phase and op group, in bounded memory.

The engine appends each iteration's aggregates (prefill chunks, new and cached tokens, samples, decode
sequences and contexts) and its simulated duration; every :data:`FLUSH` iterations (and at the end) the
buffer is turned into per-phase, per-op-group work with the vectorised work tables
(:meth:`predictor.predictor.BoundPredictor.phase_work`) and added to running totals, so memory stays flat
however long the run. Group times are rescaled so each iteration's groups add up to its simulated duration
(which differs from the table's time when a contention model stretches iterations). Metric definitions:
:mod:`predictor.efficiency`.
"""

from __future__ import annotations

import numpy as np

from predictor.efficiency import add_totals, report, sum_work

FLUSH = 8_192
_COLUMNS = 7  # prefill chunks, new tokens, kv tokens, samples, decode seqs, decode context, duration (ms)


class EfficiencyRecorder:
    """Accumulates the work of every iteration of one engine (see the module docstring)."""

    def __init__(self, bound):
        self.bound = bound
        self.buffer = np.zeros((FLUSH, _COLUMNS))
        self.n = 0
        self.rows: list[tuple] = []
        self.totals: dict | None = None

    def add(self, prefill_chunks: int, prefill_new: int, prefill_kv: int, prefill_samples: int, decode_seqs: int,
            decode_context: int, duration_ms: float) -> None:
        rows = self.rows
        rows.append((prefill_chunks, prefill_new, prefill_kv, prefill_samples, decode_seqs, decode_context,
                     duration_ms))
        if len(rows) >= FLUSH:
            self._take_rows()

    def _take_rows(self) -> None:
        """Move the single iterations appended by :meth:`add` into the array buffer."""
        rows, self.rows = self.rows, []
        start = 0
        while start < len(rows):
            if self.n == FLUSH:
                self.flush()
            take = min(FLUSH - self.n, len(rows) - start)
            self.buffer[self.n:self.n + take] = np.asarray(rows[start:start + take], float)
            self.n += take
            start += take

    def add_decode_steps(self, decode_seqs: int, contexts: np.ndarray, durations_ms: np.ndarray) -> None:
        """A run of decode-only iterations (Σ cached contexts and duration of each step; order is irrelevant
        to the totals, so they go straight to the array buffer)."""
        start = 0
        while start < len(contexts):
            if self.n == FLUSH:
                self.flush()
            take = min(FLUSH - self.n, len(contexts) - start)
            rows = self.buffer[self.n:self.n + take]
            rows[:, :4] = 0.0
            rows[:, 4] = decode_seqs
            rows[:, 5] = contexts[start:start + take]
            rows[:, 6] = durations_ms[start:start + take]
            self.n += take
            start += take

    def flush(self) -> None:
        if self.rows and self.n < FLUSH:
            self._take_rows()
        if self.n == 0:
            return
        rows = self.buffer[:self.n]
        work = self.bound.phase_work(*(rows[:, k] for k in range(6)))
        predicted = sum(w["time_ms"] for groups in work.values() for w in groups.values())
        scale = np.where(predicted > 0, rows[:, 6] / np.where(predicted > 0, predicted, 1.0), 0.0)
        for groups in work.values():
            for w in groups.values():
                w["time_ms"] = w["time_ms"] * scale
        self.totals = add_totals(self.totals, sum_work(work))
        self.n = 0

    def report(self) -> dict:
        """Metrics overall, per phase and per (phase, op group): :func:`predictor.efficiency.report`."""
        self.flush()
        if self.totals is None:
            return {}
        return report(self.totals, self.bound.peak_flops, self.bound.gpu.hbm_bandwidth_bytes_per_s)
