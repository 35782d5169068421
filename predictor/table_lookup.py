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
    MEMO_ENTRIES,
    PRE_CHUNKS_LOG,
    PRE_CONTEXT_LOG,
    PRE_TOKENS_LOG,
    PREFILL_CHUNKS,
    PREFILL_CONTEXT,
    PREFILL_TOKENS,
    locate,
    locate_ascending,
)


_LAST_KV_CELLS: list = [None]  # (bytes of the KV means, cells, weights) of the latest decode_column_ms call


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
            total += token_ms[int(tokens) - 1] if tokens <= DENSE_TOKENS and tokens == int(tokens) else \
                self._sparse_1d("tokens", tokens)
        if samples > 0:
            total += sample_ms[int(samples) - 1] if samples <= DENSE_SAMPLES and samples == int(samples) else \
                self._sparse_1d("samples", samples)
        if decode_seqs > 0:
            total += self.decode_ms_scalar(decode_seqs, decode_kv_mean)
        if prefill_chunks > 0 and prefill_q_mean > 0:
            total += self._prefill_scalar(prefill_chunks, prefill_q_mean, prefill_ctx_mean)
        return total

    def _remembered(self, memo: str, key, compute):
        """``compute()``, remembered under ``key`` in this table's memo ``memo`` (a simulation asks for the same
        few sizes again and again; the memo is cleared when it reaches :data:`MEMO_ENTRIES`)."""
        values = self.__dict__.setdefault(memo, {})
        value = values.get(key)
        if value is None:
            if len(values) >= MEMO_ENTRIES:
                values.clear()
            value = values[key] = compute()
        return value

    def _sparse_1d(self, table: str, x: float) -> float:
        """A 1-D table (``tokens`` or ``samples``) beyond its dense part, at ``x``: the vectorised interpolation."""
        dense = DENSE_TOKENS if table == "tokens" else DENSE_SAMPLES
        return self._remembered("_sparse_memo", (table, x), lambda: float(self._interp_1d(
            np.array([x]), getattr(self, f"{table}_grid"), dense, getattr(self, f"{table}_ms"),
            getattr(self, f"{table}_log_ms"))[0]))

    def decode_ms_scalar(self, seqs: float, kv_mean: float) -> float:
        """Scalar twin of :meth:`decode_ms` (plain Python: the per-iteration hot path). A run asks for few batch
        sizes, so each one's cell on the batch axis is located once (the same cell and weight every time)."""
        y_cell = _cell(DEC_KV_LOG, kv_mean)
        self._last_kv_cell = (kv_mean, y_cell)  # the efficiency report's work look-up of the same iteration reuses it
        return (math.exp(_bilinear(self._lists()[2], self._seqs_cell(seqs), y_cell)) * _at_least_one(seqs / _SEQS_MAX)
                * _at_least_one(kv_mean / _KV_MAX))

    def _seqs_cell(self, seqs: float) -> tuple[int, float]:
        cells = self.__dict__.get("_seqs_cells")
        if cells is None:
            cells = self.__dict__["_seqs_cells"] = {}
        cell = cells.get(seqs)
        if cell is None:
            if len(cells) >= MEMO_ENTRIES:
                cells.clear()
            cell = cells[seqs] = _cell(DEC_SEQS_LOG, seqs)
        return cell

    def _work_rows(self, table: str, i: int) -> tuple[list, list]:
        """Rows ``i`` and ``i + 1`` (first axis) of an attention work table (``decode_log_work`` or
        ``prefill_log_work``) as nested lists whose leaves are the fields (:data:`ATTENTION_WORK` of
        :mod:`predictor.tables`), converted on first use: a run reads few rows, and the whole prefill table as lists
        would take tens of ms to build."""
        rows = self.__dict__.setdefault("_work_rows_memo", {})
        found = rows.get((table, i))
        if found is None:
            array = getattr(self, table)
            found = rows[(table, i)] = (array[i].tolist(), array[i + 1].tolist())
        return found

    def decode_work_scalar(self, seqs: float, kv_mean: float) -> tuple[float, ...]:
        """(roofline ms, FLOPs, bytes) of the decode attention ops: the scalar twin of the vectorised look-up."""
        last = self.__dict__.get("_last_kv_cell")
        y_cell = last[1] if last is not None and last[0] == kv_mean else _cell(DEC_KV_LOG, kv_mean)
        (i, wi), (j, wj) = self._seqs_cell(seqs), y_cell
        row_i, row_i1 = self._work_rows("decode_log_work", i)
        ai, aj = 1 - wi, 1 - wj
        return _weighted_fields((ai * aj, wi * aj, ai * wj, wi * wj), (row_i[j], row_i1[j], row_i[j + 1], row_i1[j + 1]),
                                _at_least_one(seqs / _SEQS_MAX) * _at_least_one(kv_mean / _KV_MAX))

    def decode_work_column(self, seqs: float, kv_mean: np.ndarray) -> np.ndarray:
        """(roofline ms, FLOPs, bytes) of the decode attention ops at one batch size and many non-decreasing mean
        KV lengths (a run of decode steps), shape (len(kv_mean), 3)."""
        return self._decode_column(self.decode_log_work, seqs, np.asarray(kv_mean, float), ascending=True)

    def prefill_work_scalar(self, chunks: float, q_mean: float, ctx_mean: float) -> tuple[float, ...]:
        """(roofline ms, FLOPs, bytes) of the prefill attention ops: the scalar twin of the vectorised look-up."""
        last = self.__dict__.get("_last_prefill_cells")
        key = (chunks, q_mean, ctx_mean)
        cells = last[1] if last is not None and last[0] == key else _prefill_cells(chunks, q_mean, ctx_mean)
        i, wi, j, wj, k, wk = cells
        r0, r1 = self._work_rows("prefill_log_work", i)
        r00, r01, r10, r11 = r0[j], r0[j + 1], r1[j], r1[j + 1]
        a0, b0, c0, k1 = 1 - wi, 1 - wj, 1 - wk, k + 1
        ab00, ab01, ab10, ab11 = a0 * b0, a0 * wj, wi * b0, wi * wj
        return _weighted_fields(
            (ab00 * c0, ab00 * wk, ab01 * c0, ab01 * wk, ab10 * c0, ab10 * wk, ab11 * c0, ab11 * wk),
            (r00[k], r00[k1], r01[k], r01[k1], r10[k], r10[k1], r11[k], r11[k1]),
            _at_least_one(chunks / _CHUNKS_MAX) * _at_least_one(q_mean / _TOKENS_MAX) * _at_least_one(ctx_mean / _CONTEXT_MAX))

    def decode_column_ms(self, seqs: float, kv_mean: np.ndarray, ascending: bool = False) -> np.ndarray:
        """Decode attention time (ms) at one batch size ``seqs`` and many mean KV lengths per sequence (a run of
        decode steps): the values of ``decode_ms(np.full(len(kv_mean), seqs), kv_mean)``, with the batch size's
        cell located once instead of per step. ``ascending``: the caller guarantees ``kv_mean`` is non-decreasing
        (a run of steps), which makes locating its cells cheaper (same values)."""
        kv_mean = np.asarray(kv_mean, float)
        if not seqs > 0:
            return np.zeros_like(kv_mean)
        return self._decode_column(self.decode_log_ms, seqs, kv_mean, ascending)

    def _decode_column(self, table: np.ndarray, seqs: float, kv_mean: np.ndarray, ascending: bool) -> np.ndarray:
        """A log-valued decode table ([seqs, kv] or [seqs, kv, fields]) at one batch size and many mean KV lengths."""
        (i, wi), (j, wj) = self._column_cells(seqs, kv_mean, ascending)
        # beyond the grids' ends the time grows in proportion; inside them the factors are 1 (skipped: x × 1.0 = x)
        inside = ascending and len(kv_mean) and kv_mean[-1] <= _KV_MAX
        beyond = None if inside else np.maximum(kv_mean / DECODE_KV[-1], 1.0)
        if table.ndim == 3:  # one value per field on the last axis
            wj = wj[:, None]
            beyond = None if beyond is None else beyond[:, None]
        low, high = table[i], table[i + 1]
        a, b, j1 = 1 - wi, 1 - wj, j + 1
        val = a * b * low[j] + wi * b * high[j] + a * wj * low[j1] + wi * wj * high[j1]
        out = np.exp(val)
        if seqs > _SEQS_MAX:
            out *= seqs / DECODE_SEQS[-1]
        return out if beyond is None else out * beyond

    def _column_cells(self, seqs: float, kv_mean: np.ndarray, ascending: bool):
        """((row, weight) of ``seqs``, (cells, weights) of ``kv_mean``) on the decode grids, for a column look-up."""
        rows = self.__dict__.setdefault("_decode_row_cells", {})  # batch size → (row, weight): few distinct sizes
        cell = rows.get(seqs)
        if cell is None:
            i, wi = locate(np.array([seqs], float), DECODE_SEQS)
            cell = rows[seqs] = (int(i[0]), wi[0])
        key = kv_mean.tobytes()  # a profiled engine looks up the same run twice (kernel and roofline tables)
        last = _LAST_KV_CELLS[0]
        if last is not None and last[0] == key:
            return cell, (last[1], last[2])
        j, wj = locate_ascending(kv_mean, DECODE_KV) if ascending else locate(kv_mean, DECODE_KV)
        _LAST_KV_CELLS[0] = (key, j, wj)
        return cell, (j, wj)

    def _prefill_scalar(self, chunks: float, q_mean: float, ctx_mean: float) -> float:
        """Scalar twin of :meth:`prefill_ms` (same cells, weights and extrapolation)."""
        cells = _prefill_cells(chunks, q_mean, ctx_mean)
        self._last_prefill_cells = ((chunks, q_mean, ctx_mean), cells)  # reused by the work look-up, as for decode
        return (math.exp(_trilinear(self._lists()[3], cells))
                * _at_least_one(chunks / _CHUNKS_MAX) * _at_least_one(q_mean / _TOKENS_MAX)
                * _at_least_one(ctx_mean / _CONTEXT_MAX))


def _weighted_fields(weights: tuple, corners: tuple, scale: float) -> tuple[float, float, float]:
    """exp(Σ weight × corner) × scale of each of the three fields of a work table's corners (log values)."""
    f0 = f1 = f2 = 0.0
    for w, c in zip(weights, corners):
        f0 += w * c[0]
        f1 += w * c[1]
        f2 += w * c[2]
    return math.exp(f0) * scale, math.exp(f1) * scale, math.exp(f2) * scale


def _prefill_cells(chunks: float, q_mean: float, ctx_mean: float) -> tuple:
    """Cells and weights of a prefill look-up on (chunks, tokens, context): context 0 is its own grid line."""
    i, wi = _cell(PRE_CHUNKS_LOG, chunks)
    j, wj = _cell(PRE_TOKENS_LOG, q_mean)
    if ctx_mean < 1.0:
        k, wk = 0, max(ctx_mean, 0.0)
    else:
        k, wk = _cell(PRE_CONTEXT_LOG, ctx_mean)
        k += 1
    return i, wi, j, wj, k, wk


def _trilinear(t: list, cells: tuple) -> float:
    """Trilinear interpolation of a log-valued prefill table (nested lists) at ``cells`` (:func:`_prefill_cells`)."""
    i, wi, j, wj, k, wk = cells
    rows_i, rows_i1 = t[i], t[i + 1]
    r00, r01, r10, r11 = rows_i[j], rows_i[j + 1], rows_i1[j], rows_i1[j + 1]
    a0, b0, c0, k1 = 1 - wi, 1 - wj, 1 - wk, k + 1
    val = 0.0  # the cube's eight corners, in the order of the vectorised prefill_ms
    val += a0 * b0 * (c0 * r00[k] + wk * r00[k1])
    val += a0 * wj * (c0 * r01[k] + wk * r01[k1])
    val += wi * b0 * (c0 * r10[k] + wk * r10[k1])
    val += wi * wj * (c0 * r11[k] + wk * r11[k1])
    return val


_CHUNKS_MAX, _TOKENS_MAX, _CONTEXT_MAX = float(PREFILL_CHUNKS[-1]), float(PREFILL_TOKENS[-1]), float(PREFILL_CONTEXT[-1])
_SEQS_MAX, _KV_MAX = float(DECODE_SEQS[-1]), float(DECODE_KV[-1])
# per log grid: (first, last, last cell index, cell widths) — the same floats as computing them per call
_GRID_FACTS = {id(g): (g[0], g[-1], len(g) - 2, [g[n + 1] - g[n] for n in range(len(g) - 1)])
               for g in (DEC_SEQS_LOG, DEC_KV_LOG, PRE_CHUNKS_LOG, PRE_TOKENS_LOG, PRE_CONTEXT_LOG)}


def _at_least_one(x: float) -> float:
    """``max(x, 1.0)``, NaN kept (extrapolation beyond a grid's end is proportional)."""
    return 1.0 if x < 1.0 else x


def _cell(grid_log: list[float], value: float) -> tuple[int, float]:
    """Lower cell index and weight of ``value`` on a log grid (clamped to the grid), in plain Python."""
    facts = _GRID_FACTS.get(id(grid_log))
    if facts is None:
        facts = (grid_log[0], grid_log[-1], len(grid_log) - 2,
                 [grid_log[n + 1] - grid_log[n] for n in range(len(grid_log) - 1)])
    first, last, top, widths = facts
    lv = math.log(value) if value > 0 else first
    if lv < first:
        lv = first
    if lv > last:
        lv = last
    i = bisect.bisect_right(grid_log, lv) - 1
    if i < 0:
        i = 0
    elif i > top:
        i = top
    return i, (lv - grid_log[i]) / widths[i]


def _bilinear(table: list, x_cell: tuple[int, float], y_cell: tuple[int, float]) -> float:
    """The log value of ``table`` (nested lists) between the cells of x and y (index, weight) on their grids."""
    i, wi = x_cell
    j, wj = y_cell
    row_i, row_i1 = table[i], table[i + 1]
    ai, aj = 1 - wi, 1 - wj
    return ai * aj * row_i[j] + wi * aj * row_i1[j] + ai * wj * row_i[j + 1] + wi * wj * row_i1[j + 1]
