"""Physical ordering of GPUs: a GPU at least as fast as another on every spec is never slower on an op.

The residual model learns from a handful of GPUs. On a GPU it never saw it extrapolates, and nothing in a tree
model keeps time non-increasing in bandwidth: before this guard the shipped model predicted H200 (the H100 die
with 43% more HBM bandwidth) slower than H100 on decode attention, all-reduce and the small elementwise ops.

This module states the ordering as data. GPU ``a`` *dominates* ``b`` for a compute dtype when, from the same
vendor, ``a`` has at least ``b``'s dense peak for that dtype, HBM bandwidth, SMs, L2, link and scale-out
bandwidth and NVLink-domain size, and at most its collective latency (memory size is not a speed). The
predictor then brackets each op on an *unseen* GPU between its predictions on the trained GPUs around it:

    max(prediction on the nearest trained GPUs that dominate it)
        ≤ time on the unseen GPU ≤
    min(prediction on the nearest trained GPUs it dominates)

"Nearest" is the Pareto frontier: of the trained GPUs it dominates, those no other such GPU dominates (H100,
not A100, for H200). Trained GPUs keep their own predictions: they have measurements. Where the two bounds
cross (the model orders the two trained GPUs the wrong way round) the upper bound wins, so the unseen GPU is
never predicted slower than a GPU it beats on every spec.

Assumptions: the vendor is the first word of the GPU's ``description`` (``NVIDIA``, ``AMD``, ``Intel``); GPUs
without one are never compared. The ordering holds for kernels of one software stack; across vendors it does
not, so it is not applied there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from predictor.errors import InputError
from predictor.gpus import GPUSpec, get_gpu

# fields where more is faster; link latency is the one where less is faster
FASTER_WHEN_HIGHER = ("hbm_bandwidth_gbps", "sm_count", "l2_mb", "link_bandwidth_gbps", "internode_bandwidth_gbps",
                      "scale_up_gpus")


def vendor(gpu: GPUSpec) -> str:
    """The GPU's vendor: the first word of its description, lower case ('' when there is none)."""
    words = gpu.description.split()
    return words[0].lower() if words else ""


def dominates(fast: GPUSpec, slow: GPUSpec, dtype: str) -> bool:
    """Whether ``fast`` is at least as fast as ``slow`` on every spec that sets an op's speed in ``dtype``.

    Both must support ``dtype`` natively (a non-null peak) and share a vendor. A GPU dominates itself.
    """
    # the native peaks: GPUSpec.peak_flops falls back to fp16 for a type without tensor cores
    peak_fast, peak_slow = getattr(fast.peak_tflops, dtype), getattr(slow.peak_tflops, dtype)
    if not (peak_fast and peak_slow) or not vendor(fast) or vendor(fast) != vendor(slow):
        return False
    return (peak_fast >= peak_slow and fast.link_latency_us <= slow.link_latency_us
            and all(getattr(fast, f) >= getattr(slow, f) for f in FASTER_WHEN_HIGHER))


def _frontier(found: list[GPUSpec], nearer, dtype: str) -> tuple[GPUSpec, ...]:
    """The members of ``found`` that no other member is nearer than (``nearer(x, y)``: x lies between y and the
    GPU being bounded); equal-spec duplicates keep the first."""
    keep = []
    for i, g in enumerate(found):
        beaten = any(nearer(h, g, dtype) and not (nearer(g, h, dtype) and j > i)
                     for j, h in enumerate(found) if j != i)
        if not beaten:
            keep.append(g)
    return tuple(keep)


def sibling_bounds(gpu: GPUSpec, trained: Iterable[GPUSpec], dtype: str) -> tuple[tuple[GPUSpec, ...],
                                                                                   tuple[GPUSpec, ...]]:
    """(slower, faster): the nearest trained GPUs that ``gpu`` dominates (its time is at most theirs) and the
    nearest that dominate it (its time is at least theirs), for ops in ``dtype``.

    ``gpu`` itself is expected to be unseen; a trained GPU of the same name is skipped.
    """
    others = [t for t in trained if t.name != gpu.name]
    slower = [t for t in others if dominates(gpu, t, dtype)]
    faster = [t for t in others if dominates(t, gpu, dtype)]
    # nearest slower: not dominated by another slower one; nearest faster: dominating no other faster one
    nearest_slower = _frontier(slower, dominates, dtype)
    nearest_faster = _frontier(faster, lambda h, g, d: dominates(g, h, d), dtype)
    return nearest_slower, nearest_faster


def catalogue_specs(names: Iterable[str]) -> tuple[GPUSpec, ...]:
    """The catalogue's specs of ``names`` (aliases resolved, duplicates and unknown names dropped)."""
    found: dict[str, GPUSpec] = {}
    for name in names:
        try:
            spec = get_gpu(name)
        except InputError:
            continue
        found.setdefault(spec.name, spec)
    return tuple(found.values())


def bracket(ops: pd.DataFrame, gpu_names: np.ndarray, specs: Mapping[str, GPUSpec], predicted: np.ndarray,
            trained: Sequence[GPUSpec], predict_on: Callable[[pd.DataFrame, GPUSpec], np.ndarray]) -> np.ndarray:
    """``predicted`` (ms per op row) with each row on an unseen GPU bracketed by its sibling predictions.

    Parameters
    ----------
    ops : DataFrame
        Canonical op rows (``compute_dtype`` needed; a ``gpu`` column is ignored).
    gpu_names : ndarray
        The GPU of each row, by a name that ``specs`` maps to its spec.
    specs : mapping
        Name → GPUSpec for every name in ``gpu_names``.
    predicted : ndarray
        The model's prediction of each row on its own GPU, ms.
    trained : sequence of GPUSpec
        The GPUs the model was trained on; rows on them are returned unchanged.
    predict_on : callable
        ``predict_on(rows, gpu)``: the model's prediction (ms) of ``rows`` on a trained ``gpu``.
    """
    trained_names = {g.name for g in trained}
    out = np.array(predicted, dtype=float)
    groups = pd.DataFrame({"gpu": np.asarray(gpu_names, dtype=object), "dtype": ops["compute_dtype"].to_numpy()}
                          ).groupby(["gpu", "dtype"], sort=False).indices
    for (name, dtype), rows in groups.items():
        spec = specs[name]
        if spec.name in trained_names:
            continue
        slower, faster = sibling_bounds(spec, trained, dtype)
        part = ops.iloc[rows].drop(columns="gpu", errors="ignore")
        value = out[rows]
        if faster:
            value = np.maximum(value, np.max([predict_on(part, g) for g in faster], axis=0))
        if slower:
            value = np.minimum(value, np.min([predict_on(part, g) for g in slower], axis=0))
        out[rows] = value
    return out


def bound_rows(ops: pd.DataFrame, gpu: GPUSpec | str | None, predicted: np.ndarray, trained: Sequence[GPUSpec],
               predict_on: Callable[[pd.DataFrame, GPUSpec], np.ndarray]) -> np.ndarray:
    """:func:`bracket` for op rows on ``gpu`` (or, when None, on the GPU named in each row's ``gpu`` column);
    ``predicted`` itself when every row is on a trained GPU."""
    names = np.full(len(ops), "", dtype=object) if gpu is not None else ops["gpu"].to_numpy(dtype=object)
    specs = {"": get_gpu(gpu)} if gpu is not None else {name: get_gpu(name) for name in set(names)}
    trained_names = {g.name for g in trained}
    if all(spec.name in trained_names for spec in specs.values()):
        return predicted
    return bracket(ops, names, specs, predicted, trained, predict_on)
