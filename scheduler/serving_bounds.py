"""Dominance bounds: a run on a GPU the calibration never saw is predicted no slower than on a GPU it beats.

The serving calibration (:mod:`scheduler.serving_model`) maps a kernel-only simulation to measured TTFT and
TPOT. On a GPU outside its fit that map extrapolates, and nothing in a tree model keeps it monotone in the
GPU's speed: relabelled H200, many H100 runs of the silicon CSV came out slower than the same runs' H100
prediction (``docs/serving-accuracy.md``, "A GPU without measurements", before this bound), although an H200 is
an H100 with faster, larger memory.

So, as :mod:`predictor.sibling_bounds` does for kernels, the GPU's physical order bounds the run: the same
configuration is simulated on the nearest fitted GPUs that the run's GPU dominates for its compute dtype
(:func:`predictor.sibling_bounds.sibling_bounds`: at least as fast on every speed spec; H100 for an H200) and
predicted there by the same calibration (unanchored), and the run's prediction is kept no slower than the
fastest of those::

    cal(run on X) ← min(cal(run on X), min_Y cal(run on Y)),   Y: the nearest fitted GPUs X dominates

``cal`` is the calibration's own prediction: an aggregated run's TTFT is capped before its blend with the
engine-profile simulation (:mod:`scheduler.serving_model`), whose kernels the predictor already bounds the same
way. Only for runs no sibling measurement anchors (an anchored run already has the measured bounds of
:mod:`scheduler.serving_anchors`, better evidence) and only on GPUs outside the fit (a fitted GPU's prediction is
in the calibration's own range). The bound costs one more kernel-only and roofline simulation per run and
dominated GPU, so only such runs pay it. Held out (GB300 left out of the fit, bounded by B200, B300 and GB200),
``docs/serving-accuracy.md`` scores it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BOUND_OF = "bound_of"          # a relabelled run's original ``id``
SEPARATOR = "@bound:"          # relabelled id: f"{id}{SEPARATOR}{gpu}"


def bound_requests(frame: pd.DataFrame, systems) -> pd.DataFrame:
    """The (``id``, ``system``) pairs to simulate for ``frame``'s runs: for each run on a GPU not in ``systems``
    (the calibration's fitted GPUs), the nearest of ``systems`` that its GPU dominates for the run's compute
    dtype. Runs on fitted or unknown GPUs, or of unknown dtype, get none."""
    from predictor.errors import InputError
    from predictor.gpus import get_gpu
    from predictor.sibling_bounds import catalogue_specs
    from scheduler.serving_anchors import compute_dtypes

    fitted = catalogue_specs(systems)
    memo: dict = {}
    ids, gpus = [], []
    if len(frame) and fitted:
        for run, system, dtype in zip(frame["id"].astype(str), frame["system"].astype(str).str.lower(),
                                      compute_dtypes(frame)):
            if (system, dtype) not in memo:
                try:
                    memo[system, dtype] = tuple(g.name for g in dominated_gpus(get_gpu(system), dtype, fitted))
                except InputError:
                    memo[system, dtype] = ()
            for gpu in memo[system, dtype]:
                ids.append(run)
                gpus.append(gpu)
    return pd.DataFrame({"id": pd.Series(ids, dtype=object), "system": pd.Series(gpus, dtype=object)})


def dominated_gpus(gpu, dtype: str, fitted) -> tuple:
    """The nearest of the ``fitted`` GPU specs that ``gpu`` (a :class:`predictor.gpus.GPUSpec`, a user's own
    included) dominates for compute dtype ``dtype``; none when ``gpu`` is one of them or ``dtype`` is unknown."""
    from predictor.sibling_bounds import sibling_bounds

    if not dtype or gpu.name in {g.name for g in fitted}:
        return ()
    return sibling_bounds(gpu, fitted, dtype)[0]


def relabelled_ids(requests: pd.DataFrame) -> pd.Series:
    """The ``id`` of each requested relabelled run (:func:`bound_requests`' ``id``, ``system``)."""
    return requests["id"].astype(str) + SEPARATOR + requests["system"].astype(str)


def relabelled(table: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """The measured runs of ``table`` named in ``requests`` (:func:`bound_requests`), each once per requested GPU:
    ``system`` replaced, ``id`` made unique (:func:`relabelled_ids`) and the original kept in :data:`BOUND_OF`."""
    if not len(requests):
        return table.iloc[:0].assign(**{BOUND_OF: pd.Series(dtype=object)})
    source = table.assign(**{BOUND_OF: table["id"].astype(str)}).drop(columns=["system"])
    out = requests.rename(columns={"id": BOUND_OF}).astype({BOUND_OF: str}).merge(source, on=BOUND_OF, how="inner")
    out["id"] = relabelled_ids(out)  # the source's id and the requested GPU
    return out[[*table.columns, BOUND_OF]]


def upper_bounds(calibration, basis: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Upper bounds (ms) of ``ttft_ms`` / ``tpot_ms`` for each run of ``frame`` (its index; inf where none): the
    least of ``calibration``'s unanchored predictions of its relabelled runs in ``basis`` (the kernel-only basis of
    :func:`relabelled`'s table, whose :data:`BOUND_OF` names the run), and ``bound_gpus`` (how many bounded it)."""
    out = pd.DataFrame({"ttft_ms": np.inf, "tpot_ms": np.inf, "bound_gpus": 0}, index=frame.index)
    if basis is None or not len(basis) or "id" not in frame:
        return out
    pred = calibration.predict(basis, anchored=False)
    pred[BOUND_OF] = basis[BOUND_OF].astype(str).to_numpy()
    least = pred.groupby(BOUND_OF)[["ttft_ms", "tpot_ms"]].min()
    count = pred.dropna(subset=["ttft_ms", "tpot_ms"]).groupby(BOUND_OF).size()
    ids = frame["id"].astype(str)
    for target in ("ttft_ms", "tpot_ms"):
        values = ids.map(least[target]).to_numpy(float)
        out[target] = np.where(np.isfinite(values), values, np.inf)
    out["bound_gpus"] = ids.map(count).fillna(0).astype(int).to_numpy()
    return out
