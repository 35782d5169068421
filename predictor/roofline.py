"""Roofline times of op rows on a GPU, and iteration totals (vectorised).

Per kernel call (efficiency 1, the ideal)::

    compute_ms = flops / peak_flops(compute_dtype)
    memory_ms  = bytes / hbm_bandwidth
    ideal_ms   = max(compute_ms, memory_ms)                         kernels
    network_ms = link_bytes / link_bandwidth + link_latency         collectives (world_size > 1)
    bound      = "compute" | "memory" | "network"
    intensity  = flops / bytes                                      FLOP/byte

An iteration's ideal time is Σ count · ideal_ms over its ops (kernels serialised, no overlap).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from predictor import opcost as oc
from predictor.gpus import COMPUTE_DTYPES, GPUSpec, get_gpu
from predictor.lazy import pandas as pd

ROOFLINE_COLUMNS = ("flops", "bytes", "link_bytes", "intensity", "compute_ms", "memory_ms", "network_ms",
                    "ideal_ms", "bound")


SPEC_FIELDS = ("hbm_bandwidth_gbps", "sm_count", "l2_mb", "link_bandwidth_gbps", "link_latency_us", "memory_gib",
               "scale_up_gpus", "internode_bandwidth_gbps")


def hardware_arrays(gpus: GPUSpec | Sequence, compute_dtype: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row hardware numbers (SI units) for a single GPU or one GPU name/spec per row.

    Returns ``peak_flops`` (FLOP/s for each row's compute dtype), ``hbm_bytes_per_s``,
    ``link_bytes_per_s``, ``link_latency_s``, and the spec-sheet numbers ``hbm_bandwidth_gbps``,
    ``sm_count``, ``l2_mb``, ``link_bandwidth_gbps``, ``link_latency_us``, ``memory_gib``, ``scale_up_gpus``,
    ``internode_bandwidth_gbps``.
    """
    dtype = np.asarray(compute_dtype, dtype=object)
    if isinstance(gpus, GPUSpec | str):
        specs, codes = [get_gpu(gpus)], np.zeros(len(dtype), dtype=np.int64)
    else:
        cat = pd.Categorical(np.asarray(gpus, dtype=object))
        specs = [get_gpu(name) for name in cat.categories]
        codes = cat.codes.astype(np.int64)
    peaks = np.array([[s.peak_flops(d) for d in COMPUTE_DTYPES] for s in specs])
    dcodes = pd.Categorical(dtype, categories=COMPUTE_DTYPES).codes
    if (dcodes < 0).any():
        from predictor.errors import InputError

        bad = sorted({str(d) for d in dtype[dcodes < 0]})
        raise InputError(f"compute_dtype: unknown value(s) {bad}; allowed: {', '.join(COMPUTE_DTYPES)}")
    out = {name: np.array([float(getattr(s, name)) for s in specs])[codes] for name in SPEC_FIELDS}
    out["peak_flops"] = peaks[codes, dcodes]
    out["hbm_bytes_per_s"] = out["hbm_bandwidth_gbps"] * 1e9
    out["link_bytes_per_s"] = out["link_bandwidth_gbps"] * 1e9
    out["link_latency_s"] = out["link_latency_us"] * 1e-6
    return out


BOUNDS = ("compute", "memory", "network")


def roofline_arrays(ops: pd.DataFrame, gpu: GPUSpec | str | None = None, hw: dict | None = None) -> dict[str, np.ndarray]:
    """Roofline quantities of op rows as arrays (no DataFrame copies; the hot path).

    Returns ``flops``, ``bytes``, ``link_bytes``, ``intensity``, ``compute_ms``, ``memory_ms``,
    ``network_ms``, ``ideal_ms`` (per call) and ``bound_code`` (index into :data:`BOUNDS`).
    ``ops`` must already hold every shape column (see :func:`predictor.opcost.fill_shape_defaults`).
    """
    kind = oc.kind_array(ops)
    costs = oc.op_costs(ops, kind=kind)
    if hw is None:
        hw = hardware_arrays(gpu if gpu is not None else ops["gpu"].to_numpy(), ops["compute_dtype"].to_numpy())
    flops, nbytes, link = costs["flops"], costs["bytes"], costs["link_bytes"]
    collective = np.isin(kind, oc.COLLECTIVE_KINDS)
    world = ops["world_size"].to_numpy(float)
    compute_ms = flops / hw["peak_flops"] * 1e3
    memory_ms = nbytes / hw["hbm_bytes_per_s"] * 1e3
    # a collective over more GPUs than share the scale-up link runs at the scale-out network's rate
    rate = np.where(world > hw["scale_up_gpus"], np.minimum(hw["link_bytes_per_s"], hw["internode_bandwidth_gbps"] * 1e9),
                    hw["link_bytes_per_s"])
    network_ms = np.where(collective & (world > 1), link / rate * 1e3 + hw["link_latency_s"] * 1e3, 0.0)
    ideal_ms = np.where(collective, network_ms, np.maximum(compute_ms, memory_ms))
    bound_code = np.where(collective, 2, np.where(compute_ms >= memory_ms, 0, 1)).astype(np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        intensity = np.where(nbytes > 0, flops / np.where(nbytes > 0, nbytes, 1.0), 0.0)
    return {"flops": flops, "bytes": nbytes, "link_bytes": link, "intensity": intensity, "compute_ms": compute_ms,
            "memory_ms": memory_ms, "network_ms": network_ms, "ideal_ms": ideal_ms, "bound_code": bound_code}


def roofline(ops: pd.DataFrame, gpu: GPUSpec | str | None = None, hw: dict | None = None) -> pd.DataFrame:
    """Add roofline columns to an op table.

    Parameters
    ----------
    ops : DataFrame
        Canonical op rows (``op_kind``, ``compute_dtype`` and shape columns).
    gpu : GPUSpec or str, optional
        The GPU for every row; when omitted, each row's ``gpu`` column names its GPU.
    hw : dict, optional
        Precomputed :func:`hardware_arrays` for these rows (saves recomputing them).

    Returns
    -------
    DataFrame
        ``ops`` with :data:`ROOFLINE_COLUMNS` added (times in ms, per call).
    """
    ops = oc.fill_shape_defaults(ops)
    arrays = roofline_arrays(ops, gpu, hw)
    extra = {name: arrays[name] for name in ROOFLINE_COLUMNS if name != "bound"}
    extra["bound"] = pd.Categorical.from_codes(arrays["bound_code"], categories=BOUNDS)
    return pd.concat([ops, pd.DataFrame(extra, index=ops.index)], axis=1)


def iteration_totals(ops: pd.DataFrame, n_iterations: int | None = None, column: str = "ideal_ms") -> np.ndarray:
    """Σ count · ``column`` per iteration (ms), as an array indexed by iteration."""
    it = ops["iteration"].to_numpy(np.int64)
    n = int(n_iterations if n_iterations is not None else (it.max() + 1 if len(it) else 0))
    weights = ops["count"].to_numpy(float) * ops[column].to_numpy(float)
    return np.bincount(it, weights=weights, minlength=n)
