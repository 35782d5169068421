"""A predictor bound to one configuration (model, GPU, parallel layout, precision): the simulator's hot path.

:class:`BoundPredictor` times iterations from their aggregates (counts and token sums) through the
precomputed tables of :mod:`predictor.tables`, with plain-Python scalar look-ups per iteration and vectorised
ones for runs of decode steps. Times are milliseconds; work is FLOPs and HBM bytes per GPU.
Get one with :meth:`predictor.Predictor.bind`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictor.gpus import GPUSpec
from predictor.model_spec import ModelSpec
from predictor.overhead import NO_OVERHEAD, OverheadModel
from predictor.parallel import ParallelConfig
from predictor.precision import Precision


@dataclass(frozen=True)
class BoundPredictor:
    """Iteration time from aggregates for one (model, GPU, TP, precision); see :meth:`Predictor.bind`."""

    table: object
    overhead: OverheadModel
    tp: int
    model: ModelSpec
    gpu: GPUSpec
    precision: Precision
    parallel: ParallelConfig = ParallelConfig()

    def iteration_ms(self, prefill_chunks: int, prefill_new_tokens: int, prefill_kv_tokens: int,
                     prefill_samples: int, decode_seqs: int, decode_context_tokens: int) -> float:
        """Predicted iteration time (ms) from aggregates.

        Parameters
        ----------
        prefill_chunks, prefill_new_tokens, prefill_kv_tokens : int
            Number of prefill chunks, Σ new tokens, Σ (new + cached context) over chunks.
        prefill_samples : int
            Chunks that complete their prompt and sample a token.
        decode_seqs, decode_context_tokens : int
            Decoding sequences and Σ of their cached contexts.
        """
        tokens = prefill_new_tokens + decode_seqs
        if tokens <= 0:
            return 0.0
        q_mean = prefill_new_tokens / prefill_chunks if prefill_chunks else 0.0
        kernel = kernel_ms_scalar(
            self.table, self.parallel, tokens, prefill_samples + decode_seqs, decode_seqs,
            (decode_context_tokens + decode_seqs) / decode_seqs if decode_seqs else 0.0,
            prefill_chunks, q_mean, (prefill_kv_tokens / prefill_chunks - q_mean) if prefill_chunks else 0.0)
        seqs = prefill_chunks + decode_seqs
        return kernel + (self.overhead.iteration_ms(seqs, self.parallel.gpus) if self.overhead is not NO_OVERHEAD
                         else 0.0)

    def decode_steps_ms(self, decode_seqs: int, context_tokens: int, steps: int) -> np.ndarray:
        """Times (ms) of ``steps`` consecutive decode-only iterations of ``decode_seqs`` sequences whose summed
        cached context starts at ``context_tokens`` and grows by ``decode_seqs`` per step (vectorised twin of
        calling :meth:`iteration_ms` once per step)."""
        b = float(decode_seqs)
        t, par = self.table, self.parallel
        kv = (context_tokens + b * np.arange(steps, dtype=float) + b) / b
        b_micro, factor = (b / par.micro_batches, par.pipeline_factor) if par.pp > 1 else (b, 1.0)
        attention = t.decode_column_ms(b_micro, kv, ascending=True)
        first = t.decode_ms_scalar(b_micro, float(kv[0]))
        if factor != 1.0:  # (a product by 1.0 changes nothing: skipped)
            attention *= factor
            first *= factor
        attention += self.iteration_ms(0, 0, 0, 0, decode_seqs, context_tokens) - first  # fixed part + attention
        return attention

    def work_scalar(self, prefill_chunks: int, prefill_new_tokens: int, prefill_kv_tokens: int,
                    prefill_samples: int, decode_seqs: int, decode_context_tokens: int) -> tuple[float, float, float]:
        """(FLOPs, HBM bytes, roofline ms) per GPU of the iteration :meth:`iteration_ms` times (same arguments)."""
        if prefill_new_tokens + decode_seqs <= 0:
            return 0.0, 0.0, 0.0
        q = prefill_new_tokens / prefill_chunks if prefill_chunks else 0.0
        ctx = max(prefill_kv_tokens / prefill_chunks - q, 0.0) if prefill_chunks else 0.0
        return self.table.work_scalar(prefill_new_tokens + decode_seqs, prefill_samples + decode_seqs, decode_seqs,
                                      (decode_context_tokens + decode_seqs) / decode_seqs if decode_seqs else 0.0,
                                      prefill_chunks, q, ctx)

    def decode_steps_work(self, decode_seqs: int, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FLOPs, HBM bytes, roofline ms) of consecutive decode-only iterations (see
        :meth:`IterationTables.decode_steps_work`)."""
        return self.table.decode_steps_work(decode_seqs, contexts)

    @property
    def peak_flops(self) -> float:
        """Dense peak FLOP/s of one GPU for this configuration's compute dtype."""
        return self.gpu.peak_flops(self.precision.compute)

    def phase_work(self, prefill_chunks, prefill_new_tokens, prefill_kv_tokens, prefill_samples, decode_seqs,
                   decode_context_tokens, overhead_model: OverheadModel | None = None) -> dict:
        """Per-iteration work split by phase and op group (see :func:`predictor.efficiency.phase_work`) for
        arrays of the aggregates :meth:`iteration_ms` takes; group times add up to the iteration times.
        ``overhead_model`` replaces the predictor's own per-iteration CPU overhead (an engine profile's)."""
        from predictor.efficiency import aggregate_batch, phase_work

        batch = aggregate_batch(prefill_chunks, prefill_new_tokens, prefill_kv_tokens, prefill_samples, decode_seqs,
                                decode_context_tokens)
        seqs = batch.prefill_seqs + batch.decode_seqs
        model = self.overhead if overhead_model is None else overhead_model
        overhead = (model.iteration_ms(seqs, self.parallel.gpus) if model is not NO_OVERHEAD
                    else np.zeros(len(batch)))
        overhead = np.where(batch.tokens > 0, overhead, 0.0)
        return phase_work(self.table.work(batch), batch, overhead, self.peak_flops,
                          self.gpu.hbm_bandwidth_bytes_per_s)

    def efficiency(self, prefill_chunks, prefill_new_tokens, prefill_kv_tokens, prefill_samples, decode_seqs,
                   decode_context_tokens, weights=None) -> dict:
        """MFU, MBU, attained rates, roofline distance and bottleneck overall, per phase and per op group of
        the iterations given by aggregate arrays (``weights``: how many times each iteration runs)."""
        from predictor.efficiency import report, sum_work

        work = self.phase_work(prefill_chunks, prefill_new_tokens, prefill_kv_tokens, prefill_samples, decode_seqs,
                               decode_context_tokens)
        return report(sum_work(work, weights), self.peak_flops, self.gpu.hbm_bandwidth_bytes_per_s)


def kernel_ms_scalar(table, parallel: ParallelConfig, tokens, samples, decode_seqs, decode_kv_mean, prefill_chunks,
                     prefill_q_mean, prefill_ctx_mean) -> float:
    """Kernel time (ms) of one iteration from its aggregates; with pipeline parallelism, its batch as
    ``micro_batches`` micro-batches (counts divided, mean shapes kept) times the pipeline factor."""
    if parallel.pp == 1:
        return table.kernel_ms_scalar(tokens, samples, decode_seqs, decode_kv_mean, prefill_chunks, prefill_q_mean,
                                      prefill_ctx_mean)
    m = parallel.micro_batches
    return parallel.pipeline_factor * table.kernel_ms_scalar(
        tokens / m, samples / m, decode_seqs / m, decode_kv_mean, prefill_chunks / m, prefill_q_mean, prefill_ctx_mean)
