"""The training table: canonical kernel rows, their features, roofline times and targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.builder import build_features
from features.canonical import DATA_DIR, KERNEL_SOURCES, load_kernels
from predictor.artifact import sha256_file

TRAINING_VENDORS = ("nvidia",)  # GPU vendors whose kernels the residual model learns (training_vendor_rows)


@dataclass
class TrainingData:
    """Rows and everything derived from them, aligned by position.

    Attributes
    ----------
    table : DataFrame
        Canonical rows (identity, shapes, ``measured_ms``).
    X : DataFrame
        Feature matrix (:data:`features.builder.FEATURE_NAMES`).
    ideal_ms : ndarray
        Roofline time per row (ms).
    """

    table: pd.DataFrame
    X: pd.DataFrame
    ideal_ms: np.ndarray

    @property
    def measured_ms(self) -> np.ndarray:
        return self.table["measured_ms"].to_numpy(float)

    @property
    def log_ratio(self) -> np.ndarray:
        """The residual target: log(measured / roofline)."""
        return np.log(self.measured_ms / self.ideal_ms)

    def column(self, name: str) -> np.ndarray:
        return self.table[name].astype(str).to_numpy(dtype=object)

    def __len__(self) -> int:
        return len(self.table)


def from_table(table: pd.DataFrame) -> TrainingData:
    """Features and roofline for a canonical table (index reset)."""
    table = table.reset_index(drop=True)
    X, ideal = build_features(table)
    return TrainingData(table=table, X=X, ideal_ms=ideal)


def engine_allreduce_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without the plain-NCCL all-reduce rows of a GPU whose serving frameworks' all-reduce was measured.

    A serving engine's tensor-parallel all-reduce is its own (vLLM's and SGLang's custom all-reduce, which hand
    large messages to NCCL themselves), not a bare NCCL call; for a decode step's small messages the frameworks'
    is several times faster in ``data/aiconfigurator``'s tables. Pooling both made the residual model predict a
    mixture weighted by how many NCCL versions a GPU happened to be swept with.
    So the ``allreduce`` op learns from the frameworks' measurements (framework ``<runtime>-custom-<version>``)
    wherever a GPU has them, and from NCCL (nccl-tests, Vidur's 2023 profiles) only on a GPU without them.
    All-gather and all-to-all rows, which have no framework variant, are kept. (Rows a caller adds with
    :func:`load_training_data`'s ``extra`` are used as given.)
    """
    allreduce = table["op"].astype(str).to_numpy() == "allreduce"
    framework = table["framework"].astype(str)
    engine = allreduce & framework.str.contains("-custom-", regex=False).to_numpy()
    engine_gpus = set(table["gpu"].astype(str).to_numpy()[engine])
    drop = allreduce & ~engine & table["gpu"].astype(str).isin(engine_gpus).to_numpy()
    return table.loc[~drop]


def training_vendor_rows(table: pd.DataFrame, vendors: tuple[str, ...] = TRAINING_VENDORS) -> pd.DataFrame:
    """``table`` without the rows of GPUs from other vendors than ``vendors`` (the first word of the catalogue
    description, :func:`predictor.sibling_bounds.vendor`; GPUs the catalogue lacks are kept for validation to judge).

    The residual model's features are physical (roofline terms, shapes, tiling, precision) and carry no vendor:
    one vendor's kernels on its own software stack are what they can describe. The one Intel GPU of the data (Arc
    Pro B60, vLLM on XPU) shares no stack with the rest, and training on it made the NVIDIA GPUs held out worse
    (``python -m benchmarks.experiments.training_vendors`` measures it; ``docs/model.md``). Its rows stay in the
    shipped data.
    """
    from predictor.errors import InputError
    from predictor.gpus import get_gpu
    from predictor.sibling_bounds import vendor

    def keep(name: str) -> bool:
        try:
            return vendor(get_gpu(name)) in vendors
        except InputError:
            return True

    gpus = table["gpu"].astype(str)
    kept = {g: keep(g) for g in gpus.unique()}
    return table.loc[gpus.map(kept).to_numpy(bool)]


def load_training_data(data_dir: str | Path | None = None, sources: tuple[str, ...] = KERNEL_SOURCES,
                       extra: pd.DataFrame | None = None) -> TrainingData:
    """The shipped kernel tables of ``sources`` (plus ``extra`` canonical rows) with features.

    All-reduce rows are the serving engines' where measured (:func:`engine_allreduce_rows`); only GPUs of
    :data:`TRAINING_VENDORS` (:func:`training_vendor_rows`).
    """
    table = engine_allreduce_rows(training_vendor_rows(load_kernels(data_dir, sources)))
    if extra is not None and len(extra):
        table = pd.concat([table, extra], ignore_index=True)
    return from_table(table)


def data_hashes(data_dir: str | Path | None = None, sources: tuple[str, ...] = KERNEL_SOURCES) -> dict[str, str]:
    """sha256 of each source's shipped kernel table (identifies the training data)."""
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    return {source: sha256_file(data_dir / source / "kernels.parquet") for source in sources}


def group_codes(table: pd.DataFrame, by: tuple[str, ...]) -> np.ndarray:
    """One integer per row identifying its combination of the ``by`` columns (vectorised)."""
    codes = np.zeros(len(table), dtype=np.int64)
    for column in by:
        col_codes, uniques = pd.factorize(table[column], sort=True)
        codes = codes * (len(uniques) + 1) + col_codes
    return codes


def balanced_sample(table: pd.DataFrame, idx: np.ndarray, n_max: int, seed: int,
                    by: tuple[str, ...] = ("source", "gpu", "op_kind")) -> np.ndarray:
    """At most ``n_max`` of the positions ``idx``, capping each ``by`` group at a common size.

    The cap is the largest per-group size whose total stays within ``n_max``, so small groups
    (a rare op kind on one GPU) are kept whole and large sweeps are thinned uniformly at random.
    """
    idx = np.asarray(idx)
    if len(idx) <= n_max:
        return np.sort(idx)
    _, inverse = np.unique(group_codes(table[list(by)].iloc[idx], by), return_inverse=True)  # only the key columns
    sizes = np.bincount(inverse)
    lo, hi = 1, int(sizes.max())
    while lo < hi:  # largest cap with sum(min(size, cap)) <= n_max
        mid = (lo + hi + 1) // 2
        if np.minimum(sizes, mid).sum() <= n_max:
            lo = mid
        else:
            hi = mid - 1
    order = np.random.default_rng(seed).permutation(len(idx))
    shuffled_groups = inverse[order]
    rank = pd.Series(shuffled_groups).groupby(shuffled_groups).cumcount().to_numpy()
    return np.sort(idx[order[rank < lo]])
