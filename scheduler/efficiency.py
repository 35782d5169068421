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
        self.rows: list[tuple] = []         # single iterations, as appended by the engine's hot path
        self.blocks: list[np.ndarray] = []  # runs of decode steps, shape (steps, _COLUMNS)
        self.pending = 0
        self.totals: dict | None = None

    def add(self, prefill_chunks: int, prefill_new: int, prefill_kv: int, prefill_samples: int, decode_seqs: int,
            decode_context: int, duration_ms: float) -> None:
        self.rows.append((prefill_chunks, prefill_new, prefill_kv, prefill_samples, decode_seqs, decode_context,
                          duration_ms))
        self.pending += 1
        if self.pending >= FLUSH:
            self.flush()

    def add_decode_steps(self, decode_seqs: int, contexts: np.ndarray, durations_ms: np.ndarray) -> None:
        """A run of decode-only iterations (Σ cached contexts and duration of each step)."""
        block = np.zeros((len(contexts), _COLUMNS))
        block[:, 4] = decode_seqs
        block[:, 5] = contexts
        block[:, 6] = durations_ms
        self.blocks.append(block)
        self.pending += len(block)
        if self.pending >= FLUSH:
            self.flush()

    def flush(self) -> None:
        """Reduce the pending iterations to per-phase, per-group totals (the order of iterations is irrelevant)."""
        if not self.pending:
            return
        parts = self.blocks + ([np.asarray(self.rows, float)] if self.rows else [])
        self.rows, self.blocks, self.pending = [], [], 0
        rows = np.concatenate(parts)
        work = self.bound.phase_work(*(rows[:, k] for k in range(6)))
        # each iteration's duration less its CPU overhead is its kernels' time: the op groups' predicted times are
        # scaled to it (an engine profile's scaled kernels, CUDA-graph padding, co-location stretch), the overhead kept
        overhead = sum(groups["overhead"]["time_ms"] for groups in work.values() if "overhead" in groups)
        kernels = [w for groups in work.values() for name, w in groups.items() if name != "overhead"]
        predicted = sum(w["time_ms"] for w in kernels)
        scale = np.where(predicted > 0, np.maximum(rows[:, 6] - overhead, 0.0) / np.where(predicted > 0, predicted, 1.0),
                         0.0)
        for w in kernels:
            w["time_ms"] = w["time_ms"] * scale
            w["kernel_ms"] = w["kernel_ms"] * scale
        self.totals = add_totals(self.totals, sum_work(work))

    def report(self) -> dict:
        """Metrics overall, per phase and per (phase, op group): :func:`predictor.efficiency.report`."""
        self.flush()
        if self.totals is None:
            return {}
        return report(self.totals, self.bound.peak_flops, self.bound.gpu.hbm_bandwidth_bytes_per_s)

