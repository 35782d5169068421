"""Look-ups of the iteration tables for one iteration, or one run of decode steps: the simulator's hot path.

:class:`TableLookups` is a mixin of :class:`predictor.tables.IterationTables` (it reads the table arrays:
``tokens_ms``, ``samples_ms``, ``decode_log_ms``, ``prefill_log_ms`` and the 1-D grids). Scalar look-ups are
plain Python on list copies of the tables (element reads from lists are several times cheaper than from numpy
arrays); they give the same cells, weights and extrapolation as the vectorised :meth:`IterationTables.kernel_ms`
(with ``math.log`` in place of ``numpy.log``). Times are milliseconds.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from predictor.table_grids import (
    DEC_KV_LOG,
    DEC_SEQS_LOG,
    DECODE_KV,
    DECODE_SEQS,
    DENSE_SAMPLES,
    DENSE_TOKENS,
    PRE_CHUNKS_LOG,
    PRE_CONTEXT_LOG,
    PRE_TOKENS_LOG,
    PREFILL_CHUNKS,
    PREFILL_CONTEXT,
    PREFILL_TOKENS,
    locate,
)


class TableLookups:
    """Scalar and decode-run look-ups of :class:`predictor.tables.IterationTables` (see the module docstring)."""

    def _lists(self) -> tuple[list, list, list, list]:
        """The tables as nested Python lists (token, sample, decode, prefill): element reads from lists are several
        times cheaper than from numpy arrays in scalar code, with the same float64 values."""
        lists = self.__dict__.get("_as_lists")
        if lists is None:
            lists = self.__dict__["_as_lists"] = (self.tokens_ms.tolist(), self.samples_ms.tolist(),
                                                  self.decode_log_ms.tolist(), self.prefill_log_ms.tolist())
        return lists

    def kernel_ms_scalar(self, tokens: int, samples: int, decode_seqs: int, decode_kv_mean: float,
                         prefill_chunks: int, prefill_q_mean: float, prefill_ctx_mean: float) -> float:
        total = 0.0
        token_ms, sample_ms, _, _ = self._lists()
        if tokens > 0:
            total += token_ms[int(tokens) - 1] if tokens <= DENSE_TOKENS and tokens == int(tokens) else float(
                self._interp_1d(np.array([tokens]), self.tokens_grid, DENSE_TOKENS, self.tokens_ms, self.tokens_log_ms)[0])
        if samples > 0:
            total += sample_ms[int(samples) - 1] if samples <= DENSE_SAMPLES and samples == int(samples) else float(
                self._interp_1d(np.array([samples]), self.samples_grid, DENSE_SAMPLES, self.samples_ms,
                                self.samples_log_ms)[0])
        if decode_seqs > 0:
            total += self.decode_ms_scalar(decode_seqs, decode_kv_mean)
        if prefill_chunks > 0 and prefill_q_mean > 0:
            total += self._prefill_scalar(prefill_chunks, prefill_q_mean, prefill_ctx_mean)
        return total

    def decode_ms_scalar(self, seqs: float, kv_mean: float) -> float:
        """Scalar twin of :meth:`decode_ms` (plain Python: the per-iteration hot path)."""
        return _bilinear(self._lists()[2], DEC_SEQS_LOG, DEC_KV_LOG, seqs, kv_mean, DECODE_SEQS[-1], DECODE_KV[-1])

    def decode_column_ms(self, seqs: float, kv_mean: np.ndarray) -> np.ndarray:
        """Decode attention time (ms) at one batch size ``seqs`` and many mean KV lengths per sequence (a run of
        decode steps): the values of ``decode_ms(np.full(len(kv_mean), seqs), kv_mean)``, with the batch size's
        cell located once instead of per step."""
        kv_mean = np.asarray(kv_mean, float)
        if not seqs > 0:
            return np.zeros_like(kv_mean)
        rows = self.__dict__.setdefault("_decode_row_cells", {})  # batch size → (row, weight): few distinct sizes
        cell = rows.get(seqs)
        if cell is None:
            i, wi = locate(np.array([seqs], float), DECODE_SEQS)
            cell = rows[seqs] = (int(i[0]), wi[0])
        i, wi = cell
        j, wj = locate(kv_mean, DECODE_KV)
        t = self.decode_log_ms
        low, high = t[i], t[i + 1]
        a = 1 - wi
        val = a * (1 - wj) * low[j] + wi * (1 - wj) * high[j] + a * wj * low[j + 1] + wi * wj * high[j + 1]
        return np.exp(val) * max(seqs / DECODE_SEQS[-1], 1.0) * np.maximum(kv_mean / DECODE_KV[-1], 1.0)

    def _prefill_scalar(self, chunks: float, q_mean: float, ctx_mean: float) -> float:
        """Scalar twin of :meth:`prefill_ms` (same cells, weights and extrapolation)."""
        i, wi = _cell(PRE_CHUNKS_LOG, chunks)
        j, wj = _cell(PRE_TOKENS_LOG, q_mean)
        if ctx_mean < 1.0:
            k, wk = 0, max(ctx_mean, 0.0)
        else:
            k, wk = _cell(PRE_CONTEXT_LOG, ctx_mean)
            k += 1
        t = self._lists()[3]
        val = 0.0
        for di, a in ((0, 1 - wi), (1, wi)):
            for dj, b in ((0, 1 - wj), (1, wj)):
                row = t[i + di][j + dj]
                val += a * b * ((1 - wk) * row[k] + wk * row[k + 1])
        return (math.exp(val) * max(chunks / PREFILL_CHUNKS[-1], 1.0) * max(q_mean / PREFILL_TOKENS[-1], 1.0)
                * max(ctx_mean / PREFILL_CONTEXT[-1], 1.0))


def _cell(grid_log: list[float], value: float) -> tuple[int, float]:
    lv = math.log(value) if value > 0 else grid_log[0]
    lv = min(max(lv, grid_log[0]), grid_log[-1])
    i = min(max(bisect.bisect_right(grid_log, lv) - 1, 0), len(grid_log) - 2)
    return i, (lv - grid_log[i]) / (grid_log[i + 1] - grid_log[i])


def _bilinear(table: np.ndarray, gx: list[float], gy: list[float], x: float, y: float, xmax: float, ymax: float) -> float:
    i, wi = _cell(gx, x)
    j, wj = _cell(gy, y)
    v = ((1 - wi) * (1 - wj) * table[i][j] + wi * (1 - wj) * table[i + 1][j]
         + (1 - wi) * wj * table[i][j + 1] + wi * wj * table[i + 1][j + 1])
    return math.exp(v) * max(x / xmax, 1.0) * max(y / ymax, 1.0)
