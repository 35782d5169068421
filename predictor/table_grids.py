"""Grids of the iteration tables (:mod:`predictor.tables`) and the cell look-up on them.

Token and sample counts are tabulated at every integer up to a dense limit, then geometrically; decode
attention over (decode sequences, mean KV tokens per sequence); prefill attention over (chunks, mean new
tokens per chunk, mean cached context tokens per chunk). Look-ups interpolate in log coordinates; the logs
of the grids are computed once here (the same float64 values as computing them per call).
"""

from __future__ import annotations

import math

import numpy as np

DENSE_TOKENS = 4096
MAX_TOKENS = 1 << 21
DENSE_SAMPLES = 2048
MAX_SAMPLES = 1 << 16
MEMO_ENTRIES = 1 << 16  # sizes remembered beyond the dense parts of the 1-D tables (cleared when full)


def _grid(dense: int, maximum: int, ratio: float) -> np.ndarray:
    """1..dense (every integer), then geometric steps of ``ratio`` up to ``maximum``."""
    tail = np.unique(np.round(np.geomspace(dense, maximum, int(math.log(maximum / dense) / math.log(ratio)) + 2)))
    return np.unique(np.concatenate([np.arange(1, dense + 1, dtype=float), tail]))


def _geom(lo: float, hi: float, ratio: float, ints_to: int = 0) -> np.ndarray:
    base = np.geomspace(lo, hi, int(math.log(hi / lo) / math.log(ratio)) + 2)
    if ints_to:
        base = np.concatenate([np.arange(1, ints_to + 1, dtype=float), base[base > ints_to]])
    return np.unique(np.round(base, 6))


DECODE_SEQS = _geom(1, 8192, 1.15, ints_to=64)
DECODE_KV = _geom(1, 1 << 20, 1.08)
PREFILL_CHUNKS = _geom(1, 1024, 1.4, ints_to=8)
PREFILL_TOKENS = _geom(1, 1 << 17, 1.25, ints_to=16)
PREFILL_CONTEXT = np.concatenate([[0.0], _geom(1, 1 << 20, 1.35)])
PREFILL_CONTEXT_POSITIVE = PREFILL_CONTEXT[1:]  # the log-spaced part (context 0 is its own grid line)

# log grids as Python lists, for the scalar look-ups (math.log of each point)
DEC_SEQS_LOG = [math.log(v) for v in DECODE_SEQS]
DEC_KV_LOG = [math.log(v) for v in DECODE_KV]
PRE_CHUNKS_LOG = [math.log(v) for v in PREFILL_CHUNKS]
PRE_TOKENS_LOG = [math.log(v) for v in PREFILL_TOKENS]
PRE_CONTEXT_LOG = [math.log(v) for v in PREFILL_CONTEXT_POSITIVE]


def _log_grid(grid: np.ndarray) -> tuple[np.ndarray, float, float, int]:
    """(log of the grid, lower clamp, upper clamp, last cell index) as :func:`locate` uses them."""
    return np.log(np.maximum(grid, 1e-12)), float(grid[0]) if grid[0] > 0 else 1e-12, float(grid[-1]), len(grid) - 2


_LOG_GRIDS = {id(g): (g, *_log_grid(g)) for g in (DECODE_SEQS, DECODE_KV, PREFILL_CHUNKS, PREFILL_TOKENS,
                                                   PREFILL_CONTEXT_POSITIVE)}


def locate(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower cell index and weight in log coordinates of each value on ``grid`` (clamped to the grid).

    The module's grids use logs computed once; any other grid is handled the same way, computed per call.
    """
    known = _LOG_GRIDS.get(id(grid))
    lg, lo, hi, last = known[1:] if known is not None and known[0] is grid else _log_grid(grid)
    lv = np.log(_clamp(values, lo, hi))
    i = _clamp(np.searchsorted(lg, lv, side="right") - 1, 0, last)
    w = _clamp((lv - lg[i]) / (lg[i + 1] - lg[i]), 0.0, 1.0)
    return i, w


def locate_ascending(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`locate` for values in ascending order (a run of decode steps): the same cells and weights, without
    the clamps when every value lies inside the grid (they change nothing there; cheaper on short arrays).

    Inside the grid, ``log(grid[0]) <= log(v) < log(grid[-1])`` makes every index a valid lower cell, and the weight
    ``(lv - lg[i]) / (lg[i+1] - lg[i])`` already lies in [0, 1] (rounding is monotone), so the clamps are no-ops.
    """
    known = _LOG_GRIDS.get(id(grid))
    if known is None or known[0] is not grid or not len(values) or not (known[2] <= values[0] and values[-1] <= known[3]):
        return locate(values, grid)
    lg = known[1]
    lv = np.log(values)
    if not (lg[0] <= lv[0] and lv[-1] < lg[-1]):
        return locate(values, grid)
    i = np.searchsorted(lg, lv, side="right") - 1
    return i, (lv - lg[i]) / (lg[i + 1] - lg[i])


def _clamp(values: np.ndarray, lo, hi) -> np.ndarray:
    """``np.clip(values, lo, hi)``: for short arrays as maximum then minimum (the same values, less call overhead)."""
    if np.size(values) >= 256:
        return np.clip(values, lo, hi)
    return np.minimum(np.maximum(values, lo), hi)
