"""The residual-model artifact: LightGBM text model + metadata JSON + checksum (no pickles).

Layout of an artifact folder::

    residual_model.txt    the booster in LightGBM's native text format
    metadata.json         feature names in order, target, data hashes, metrics, library versions, params
    checksum.sha256       "<sha256 of residual_model.txt>  residual_model.txt" and the same for metadata.json
    kernel_families.txt   optional: the per-runtime correction booster (:mod:`training.kernel_families`), present
                          and checksummed when the metadata has a ``kernel_families`` entry

Loading verifies the size limit, both checksums and that the metadata's feature list is exactly the
feature builder's; any mismatch is an :class:`~predictor.errors.InputError` naming what differs.
Writing is all-or-nothing for the three files (a write error leaves the previous artifact whole); only a
process killed between the final renames can leave a mix, and the checksum file, renamed last, makes that
a detected mismatch rather than a loaded model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from predictor.atomic import atomic_write_many
from predictor.errors import InputError

MODEL_FILE = "residual_model.txt"
FAMILIES_FILE = "kernel_families.txt"
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "checksum.sha256"
MAX_MODEL_BYTES = 200 * 2**20
MAX_METADATA_BYTES = 10 * 2**20
MAX_CHECKSUM_BYTES = 64 * 2**10
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "artifacts"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local SQLite store ``sqlite:///<cwd>/mlflow.db``."""
    import os

    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@contextlib.contextmanager
def mlflow_logs_quiet():
    """Silence MLflow's (and its database layers') logging for the duration of a call.

    MLflow logs INFO lines when it creates a SQLite store and a full traceback at ERROR level for some
    store failures (e.g. a locked database) before raising; callers report the outcome in one line.
    """
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic", "sqlalchemy")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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
    families_text: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["feature_names"])

    @property
    def training_gpus(self) -> tuple[str, ...]:
        """Names of the GPUs whose measurements the model was fitted on: the metadata's ``training_gpus``; for
        artifacts written before that field, the held-out groups of a full run's leave-one-GPU-out split (which
        holds out every GPU of the data in turn); () when neither is known (a quick run holds out only some)."""
        listed = self.metadata.get("training_gpus")
        if listed is not None:
            return tuple(str(g) for g in listed)
        if self.metadata.get("quick", True):
            return ()
        for part in str(self.metadata.get("split_signature", "")).split(";"):
            split, _, groups = part.partition(":")
            if split == "leave_one_gpu_out" and groups:
                return tuple(groups.split(","))
        return ()


def save_artifact(directory: str | Path, model_text: str, metadata: dict, families_text: str | None = None) -> Path:
    """Write an artifact folder as one unit (model, metadata, the kernel families if given, then the checksums).

    Without ``families_text`` the metadata's ``kernel_families`` entry, if any, is left out (the artifact has none).

    The files are written and flushed before any is renamed into place, and a failed rename restores
    the previous ones (:func:`predictor.atomic.atomic_write_many`): a full disk or any write error leaves a
    previous artifact in ``directory`` whole and loadable.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"artifact: {str(directory)!r} is a file, expected an artifact folder")
    directory.mkdir(parents=True, exist_ok=True)
    if families_text is None:  # an artifact without the families' booster has no families
        metadata = {k: v for k, v in metadata.items() if k != "kernel_families"}
    elif "kernel_families" not in metadata:
        raise ValueError("save_artifact: kernel families text without the metadata's 'kernel_families' entry")
    model_bytes = model_text.encode("utf-8")
    meta_bytes = (json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    files = {directory / MODEL_FILE: model_bytes, directory / METADATA_FILE: meta_bytes}
    if families_text is not None:
        files[directory / FAMILIES_FILE] = families_text.encode("utf-8")
    checksums = "".join(f"{sha256_bytes(data)}  {path.name}\n" for path, data in files.items())
    atomic_write_many({**files, directory / CHECKSUM_FILE: checksums})
    return directory


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"artifact: {what} in {str(path.parent)!r} is not UTF-8 text") from None


def _read_checksums(path: Path) -> dict[str, str]:
    sums = {}
    for line in _read_text(path, CHECKSUM_FILE).splitlines():
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
    for name, limit in ((MODEL_FILE, MAX_MODEL_BYTES), (METADATA_FILE, MAX_METADATA_BYTES),
                        (CHECKSUM_FILE, MAX_CHECKSUM_BYTES)):
        size = (directory / name).stat().st_size
        if size > limit:
            shown = f"{size / 2**20:.0f} MiB" if limit >= 2**20 else f"{size / 2**10:.0f} KiB"
            allowed = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 2**10} KiB"
            raise InputError(f"artifact: {name} is {shown}, over the {allowed} limit")
    sums = _read_checksums(directory / CHECKSUM_FILE)
    for name in (MODEL_FILE, METADATA_FILE):
        actual = sha256_file(directory / name)
        if sums.get(name) != actual:
            raise InputError(f"artifact: checksum mismatch for {name} in {str(directory)!r} "
                             f"(expected {sums.get(name, 'none')[:12]}…, file has {actual[:12]}…); the file was changed "
                             f"or partly written")
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InputError(f"artifact: {METADATA_FILE} in {str(directory)!r} is not valid JSON") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("feature_names"), list):
        raise InputError(f"artifact: {METADATA_FILE} has no 'feature_names' list")
    if expected_features is not None and list(metadata["feature_names"]) != list(expected_features):
        theirs, ours = metadata["feature_names"], list(expected_features)
        diff = sorted(set(theirs) ^ set(ours)) or ["(same names, different order)"]
        raise InputError(f"artifact: feature list of {str(directory)!r} does not match this version's features "
                         f"({len(theirs)} vs {len(ours)}; differing: {', '.join(diff[:5])}); retrain with "
                         f"`inference-sim train`")
    text = _read_text(directory / MODEL_FILE, MODEL_FILE)
    return Artifact(model_text=text, metadata=metadata, path=directory,
                    families_text=_families(directory, metadata, sums))


def _check_families_entry(info: object) -> None:
    """The metadata's ``kernel_families`` entry has what :class:`predictor.kernel_family.KernelFamilies` reads."""
    def bad(field: str, expected: str) -> InputError:
        return InputError(f"artifact: {METADATA_FILE} kernel_families.{field} must be {expected}")

    if not isinstance(info, dict):
        raise InputError(f"artifact: {METADATA_FILE} kernel_families must be an object")
    features = info.get("features")
    if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        raise bad("features", "a non-empty list of feature names")
    runtimes = info.get("runtimes")
    if not (isinstance(runtimes, dict)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in runtimes.values())):
        raise bad("runtimes", "an object of runtime name to integer code")
    if not (isinstance(info.get("op_kinds"), list) and all(isinstance(k, str) for k in info["op_kinds"])):
        raise bad("op_kinds", "a list of op kinds")
    applied = info.get("applied", {})
    if not (isinstance(applied, dict) and all(isinstance(v, list) and all(isinstance(k, str) for k in v)
                                              for v in applied.values())):
        raise bad("applied", "an object of runtime name to a list of op kinds")


def _families(directory: Path, metadata: dict, sums: dict[str, str]) -> str | None:
    """The kernel-families booster text when the metadata lists families (then the file and its checksum must be
    there and match), else None."""
    if "kernel_families" not in metadata:
        return None
    _check_families_entry(metadata["kernel_families"])
    path = directory / FAMILIES_FILE
    if not path.is_file():
        raise InputError(f"artifact: {FAMILIES_FILE} is missing in {str(directory)!r} (its metadata lists kernel "
                         f"families)")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise InputError(f"artifact: {FAMILIES_FILE} is over the {MAX_MODEL_BYTES // 2**20} MiB limit")
    actual = sha256_file(path)
    if sums.get(FAMILIES_FILE) != actual:
        raise InputError(f"artifact: checksum mismatch for {FAMILIES_FILE} in {str(directory)!r} (expected "
                         f"{sums.get(FAMILIES_FILE, 'none')[:12]}…, file has {actual[:12]}…); the file was changed "
                         f"or partly written")
    return _read_text(path, FAMILIES_FILE)


MLFLOW_HTTP_TIMEOUT_S = "10"  # per request; with no retries an unreachable server fails within ~10-20 s


def _download_mlflow_artifact(uri: str, tracking_uri: str | None = None, dst_dir: str | Path | None = None) -> Path:
    """Download the artifact folder logged with an MLflow run (``runs:/<id>``) or a registered model version
    (``models:/<name>@<alias>`` or ``models:/<name>/<version>``) into ``dst_dir`` (default: a new temporary
    folder the caller removes). HTTP calls time out after ``MLFLOW_HTTP_REQUEST_TIMEOUT`` seconds (default 10)
    with ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` retries (default 0), unless the environment sets them."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", MLFLOW_HTTP_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import re

    import mlflow
    from mlflow import MlflowClient

    tracking_uri = tracking_uri or default_tracking_uri()
    form = "models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>"
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):]
        name, sep, ref = rest.partition("@") if "@" in rest else rest.partition("/")
        if not name or not sep or not ref or not re.fullmatch(r"[^/@\s]+", name) or not re.fullmatch(r"[\w.-]+", ref):
            raise InputError(f"model URI: {uri!r} must be {form}")
        by_alias = sep == "@"
    else:
        run_id = uri[len("runs:/"):].strip("/").split("/")[0]
        if not re.fullmatch(r"[0-9a-zA-Z_-]{1,64}", run_id):
            raise InputError(f"model URI: {uri!r} must be {form} (a run id is letters and digits)")
    try:
        with mlflow_logs_quiet():
            client = MlflowClient(tracking_uri)
            if uri.startswith("models:/"):
                version = (client.get_model_version_by_alias(name, ref) if by_alias
                           else client.get_model_version(name, ref))
                run_id = version.run_id
            target = str(dst_dir) if dst_dir is not None else tempfile.mkdtemp(prefix="inference-sim-artifact-")
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="artifact", dst_path=target,
                                                       tracking_uri=tracking_uri)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 — MLflow raises many types for unknown names/runs/stores
        raise InputError(f"model URI: cannot load {uri!r} from {tracking_uri} ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:160]})") from None
    return Path(path)
