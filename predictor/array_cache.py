"""A disk cache of plain numpy arrays: checksummed ``.npz`` files, written atomically, loaded without pickle.

The predictor's lookup tables (:mod:`predictor.tables`) and columns of the shipped reference data (request traces,
output-length distributions: :func:`features.reference_data._cached_columns`) are cached here, so a later process
loads them in milliseconds instead of rebuilding them (or importing pandas to read them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def cache_dir() -> Path | None:
    """Where tables are cached (reference columns in its ``reference/`` folder): ``$INFERENCE_SIM_CACHE_DIR`` or
    ``~/.cache/inference-sim/tables``; ``INFERENCE_SIM_NO_CACHE=1`` turns caching off."""
    if os.environ.get("INFERENCE_SIM_NO_CACHE") == "1":
        return None
    root = os.environ.get("INFERENCE_SIM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "inference-sim" / "tables"


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays`` (the cache's checksum)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and their SHA-256 (checked by :func:`load_arrays`) atomically."""
    from predictor.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, sha256=np.array(arrays_digest(arrays)), **arrays)


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of a cached file, or None when it is missing, unreadable, lacks one of them or
    fails its checksum (the caller then rebuilds it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in names}
            if str(data["sha256"]) != arrays_digest(arrays):
                return None
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return arrays
