"""The residual-model artifact: LightGBM text model + metadata JSON + checksum (no pickles).

Layout of an artifact folder::

    residual_model.txt    the booster in LightGBM's native text format
    metadata.json         feature names in order, target, data hashes, metrics, library versions, params
    checksum.sha256       "<sha256 of residual_model.txt>  residual_model.txt" and the same for metadata.json

Loading verifies the size limit, both checksums and that the metadata's feature list is exactly the
feature builder's; any mismatch is an :class:`~predictor.errors.InputError` naming what differs.
Writing is atomic per file, and the checksum file is written last, so an interrupted write is
detected as a mismatch rather than loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from predictor.atomic import atomic_write
from predictor.errors import InputError

MODEL_FILE = "residual_model.txt"
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "checksum.sha256"
MAX_MODEL_BYTES = 200 * 2**20
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "artifacts"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local SQLite store ``sqlite:///<cwd>/mlflow.db``."""
    import os

    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact: the booster's text and its metadata."""

    model_text: str
    metadata: dict
    path: Path

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["feature_names"])


def save_artifact(directory: str | Path, model_text: str, metadata: dict) -> Path:
    """Write an artifact folder atomically (model, metadata, then the checksum file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_bytes = model_text.encode("utf-8")
    meta_bytes = (json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    atomic_write(directory / MODEL_FILE, model_bytes)
    atomic_write(directory / METADATA_FILE, meta_bytes)
    checksums = f"{sha256_bytes(model_bytes)}  {MODEL_FILE}\n{sha256_bytes(meta_bytes)}  {METADATA_FILE}\n"
    atomic_write(directory / CHECKSUM_FILE, checksums)
    return directory


def _read_checksums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1]] = parts[0]
    return sums


def load_artifact(directory: str | Path | None = None, expected_features: list[str] | tuple[str, ...] | None = None) -> Artifact:
    """Load and verify an artifact folder (default: the shipped ``artifacts/``).

    Parameters
    ----------
    directory : path, optional
        Artifact folder.
    expected_features : sequence of str, optional
        Feature names the caller will build; must equal the metadata's list, in order.

    Raises
    ------
    InputError
        Missing files, oversized model, checksum mismatch, unreadable metadata, feature mismatch.
    """
    directory = Path(directory) if directory is not None else SHIPPED_DIR
    if not directory.exists():
        raise InputError(f"artifact: folder {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise InputError(f"artifact: {str(directory)!r} is not a folder")
    for name in (MODEL_FILE, METADATA_FILE, CHECKSUM_FILE):
        if not (directory / name).is_file():
            raise InputError(f"artifact: {name} is missing in {str(directory)!r}")
    size = (directory / MODEL_FILE).stat().st_size
    if size > MAX_MODEL_BYTES:
        raise InputError(f"artifact: {MODEL_FILE} is {size / 2**20:.0f} MiB, over the {MAX_MODEL_BYTES // 2**20} MiB limit")
    sums = _read_checksums(directory / CHECKSUM_FILE)
    for name in (MODEL_FILE, METADATA_FILE):
        actual = sha256_file(directory / name)
        if sums.get(name) != actual:
            raise InputError(f"artifact: checksum mismatch for {name} in {str(directory)!r} "
                             f"(expected {sums.get(name, 'none')[:12]}…, file has {actual[:12]}…); the file was changed "
                             f"or partly written")
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"artifact: {METADATA_FILE} in {str(directory)!r} is not valid JSON") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("feature_names"), list):
        raise InputError(f"artifact: {METADATA_FILE} has no 'feature_names' list")
    if expected_features is not None and list(metadata["feature_names"]) != list(expected_features):
        theirs, ours = metadata["feature_names"], list(expected_features)
        diff = sorted(set(theirs) ^ set(ours)) or ["(same names, different order)"]
        raise InputError(f"artifact: feature list of {str(directory)!r} does not match this version's features "
                         f"({len(theirs)} vs {len(ours)}; differing: {', '.join(diff[:5])}); retrain with "
                         f"`inference-sim train`")
    text = (directory / MODEL_FILE).read_text(encoding="utf-8")
    return Artifact(model_text=text, metadata=metadata, path=directory)
