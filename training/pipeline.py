"""``inference-sim train``: search, held-out evaluation against baselines, final fit, artifact, MLflow.

Steps (all seeded and deterministic for a given thread count):

1. load the shipped canonical kernel tables and build features;
2. pick LightGBM hyperparameters on a group validation (20% of shape groups held out);
3. evaluate the hybrid model and the three baselines on leave-one-model-out, leave-one-GPU-out and a
   random split, every method fit on the same balanced sample of each fold's training rows;
4. fit the final model on all rows;
5. write the artifact folder (model text, metadata, checksum, evaluation metrics and a sample of
   held-out predictions) next to the target and swap it in with a rename — unless the shipped
   artifact is better on the same leave-one-model-out folds (then keep it, unless ``force``). The
   comparison and the swap hold an exclusive lock (``.<name>.lock`` beside the folder, :func:`artifact_lock`),
   so two trainings into the same folder take turns instead of racing on the renames;
6. log params, metrics, artifacts and the model to MLflow, register it, and move the ``champion``
   alias when it beats the current champion (tracking failures only warn).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.builder import CATEGORICAL_FEATURES, MODEL_FEATURES
from predictor.artifact import METADATA_FILE, SHIPPED_DIR, load_artifact, save_artifact
from predictor.atomic import atomic_path, atomic_write, temp_prefix
from predictor.errors import InputError
from training import splits as sp
from training.dataset import TrainingData, balanced_sample, data_hashes, load_training_data
from training.evaluate import run_split, search
from training.models import DEFAULT_PARAMS, ResidualModel
from training.tracking import Tracker

EVALUATION_FILE = "evaluation.json"
SAMPLE_FILE = "evaluation_sample.parquet"
IMPORTANCE_FILE = "feature_importance.csv"
PRIMARY_METRIC = "leave_one_model_out/hybrid/mdape"
# The A40 host of Vidur's CPU-overhead profiles samples ~10x slower than the A100 host for the same batch
# (6 ms vs 0.6 ms); the A100 data-centre host is the one the overhead model describes.
OVERHEAD_HOST = "a100-80gb"
TARGET = "log(measured_ms / roofline_ms)"

FULL_CANDIDATES = [
    {"num_leaves": 63, "learning_rate": 0.1, "min_data_in_leaf": 20, "rounds": 300},
    {"num_leaves": 127, "learning_rate": 0.1, "min_data_in_leaf": 20, "rounds": 300},
    {"num_leaves": 255, "learning_rate": 0.1, "min_data_in_leaf": 10, "rounds": 300},
    {"num_leaves": 127, "learning_rate": 0.05, "min_data_in_leaf": 20, "rounds": 600},
]
SHARED_HOST_CANDIDATES = [
    {"num_leaves": leaves, "learning_rate": 0.15, "min_data_in_leaf": 20, "rounds": rounds}
    for leaves in (63, 127) for rounds in (100, 200)
]
QUICK_CANDIDATES = [
    {"num_leaves": 31, "learning_rate": 0.15, "min_data_in_leaf": 20, "rounds": 80},
    {"num_leaves": 63, "learning_rate": 0.15, "min_data_in_leaf": 20, "rounds": 80},
]


@dataclass
class TrainConfig:
    """What a training run does. ``quick()`` is the small configuration the tests use."""

    seed: int = 0
    max_train_rows: int = 120_000
    final_max_rows: int | None = None
    candidates: list[dict] = field(default_factory=lambda: [dict(c) for c in FULL_CANDIDATES])
    search: bool = True
    lomo_models: list[str] | None = None
    logo_gpus: list[str] | None = None
    family_groups: list[str] | None = None
    random_split: bool = True
    sample_rows_per_split: int = 10_000
    quick_mode: bool = False

    @classmethod
    def shared_host(cls, seed: int = 0) -> TrainConfig:
        """Every fold, small fits: rate 0.15 with 63 or 127 leaves and 100 or 200 rounds (the group-validation
        search of :func:`training.evaluate.search` picks one), 20,000 balanced rows per fold and 150,000 for the
        final fit — what two CPU cores shared with other jobs train in a few minutes on the 2.1M-row table (the
        shipped artifact's configuration; the full search is :class:`TrainConfig`'s default)."""
        return cls(seed=seed, max_train_rows=20_000, final_max_rows=150_000,
                   candidates=[dict(c) for c in SHARED_HOST_CANDIDATES])

    @classmethod
    def quick(cls, seed: int = 0) -> TrainConfig:
        return cls(seed=seed, max_train_rows=15_000, final_max_rows=30_000,
                   candidates=[dict(c) for c in QUICK_CANDIDATES], lomo_models=["llama-2-7b", "qwen-72b"],
                   logo_gpus=["a40"], family_groups=["linear_attn"], sample_rows_per_split=3_000, quick_mode=True)


@dataclass
class TrainResult:
    """Summary of a run (JSON-able via :meth:`to_dict`)."""

    metrics: dict
    chosen: dict
    out_dir: str
    replaced: bool
    reason: str
    run_id: str | None
    model_version: str | None
    promoted: bool
    tracking_error: str | None
    timing_s: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _library_versions() -> dict:
    import lightgbm
    import sklearn

    versions = {"python": platform.python_version(), "lightgbm": lightgbm.__version__, "numpy": np.__version__,
                "pandas": pd.__version__, "scikit-learn": sklearn.__version__}
    try:
        import mlflow

        versions["mlflow"] = mlflow.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions


def flatten_metrics(splits: dict, stats=("mdape", "p90_ape", "mean_ape", "r2_log")) -> dict[str, float]:
    """``split/method/stat`` and ``split/method/<group>/<value>/stat`` keys for MLflow."""
    flat = {}
    for split, methods in splits.items():
        for method, groups in methods.items():
            for stat in stats:
                flat[f"{split}/{method}/{stat}"] = groups["overall"][stat]
            for group, values in groups.items():
                if group == "overall":
                    continue
                for value, s in values.items():
                    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in str(value))
                    for stat in stats:
                        flat[f"{split}/{method}/{group[3:]}/{safe}/{stat}"] = s[stat]
    return flat


def summary_table(splits: dict) -> dict:
    """``{split: {method: {"mdape", "p90_ape"}}}`` — the report's headline numbers."""
    return {split: {m: {"mdape": v["overall"]["mdape"], "p90_ape": v["overall"]["p90_ape"]} for m, v in methods.items()}
            for split, methods in splits.items()}


def _sample_predictions(pooled: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A stratified sample of held-out predictions plus the 20 worst hybrid rows, for plots and tables."""
    ape = (pooled["hybrid"] - pooled["measured_ms"]).abs() / pooled["measured_ms"]
    worst = pooled.assign(hybrid_ape=ape).nlargest(20, "hybrid_ape").drop(columns="hybrid_ape")
    per_group = max(1, n // max(1, pooled.groupby(["op_kind", "gpu"]).ngroups))
    sample = pooled.sample(frac=1.0, random_state=seed).groupby(["op_kind", "gpu"]).head(per_group)
    return pd.concat([sample.assign(worst=False), worst.assign(worst=True)], ignore_index=True)


def _folds(data: TrainingData, config: TrainConfig) -> dict[str, list[sp.Fold]]:
    folds = {"leave_one_model_out": sp.leave_one_model_out(data.table, config.lomo_models),
             "leave_one_gpu_out": sp.leave_one_gpu_out(data.table, config.logo_gpus)}
    family_folds = sp.leave_family_out(data.table, 0.5, config.seed, config.family_groups)
    if family_folds:
        folds["leave_family_out"] = family_folds
    if config.random_split:
        folds["random"] = sp.random_split(data.table, 0.2, config.seed)
    return folds


def _split_signature(folds: dict[str, list[sp.Fold]]) -> str:
    return ";".join(f"{s}:{','.join(f.held_out for f in fs)}" for s, fs in folds.items())


def _should_replace(out_dir: Path, new_metric: float, signature: str, force: bool) -> tuple[bool, str]:
    """Replace the artifact in ``out_dir`` only with a better model on the same folds (or ``force``)."""
    if force:
        return True, "forced"
    if not (out_dir / METADATA_FILE).exists():
        return True, "no previous artifact"
    try:
        old = load_artifact(out_dir).metadata
    except InputError as err:
        return True, f"previous artifact unusable ({err})"
    if old.get("split_signature") != signature:
        return False, ("previous artifact was evaluated on different folds; kept it (use --force to replace, or "
                       "--out to write elsewhere)")
    old_metric = old.get("metrics", {}).get("leave_one_model_out", {}).get("hybrid", {}).get("mdape")
    if old_metric is not None and new_metric > old_metric:
        return False, (f"new leave-one-model-out MdAPE {new_metric:.4f} is worse than the artifact's {old_metric:.4f}; "
                       f"kept it (use --force to replace)")
    return True, "better than or equal to the previous artifact" if old_metric is not None else "previous had no metric"


def _old_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.old"


def _check_out_dir(out_dir: Path) -> None:
    """Fail fast (before any training) when ``out_dir`` cannot be an artifact folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out: {str(out_dir)!r} is a file; expected an artifact folder (new or existing)")
    for ancestor in out_dir.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"--out: cannot create {str(out_dir)!r}: {str(ancestor)!r} is a file, not a folder")
            break
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / METADATA_FILE).exists() \
            and not (out_dir / "residual_model.txt").exists():
        raise InputError(f"--out: {str(out_dir)!r} is a non-empty folder that holds no artifact; training replaces the "
                         f"whole folder, so give a new or an artifact folder")


LOCK_WAIT_S = 600.0


@contextlib.contextmanager
def artifact_lock(out_dir: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the exclusive lock of the artifact folder ``out_dir`` (a ``filelock`` on ``.<name>.lock`` beside it).

    Another training (thread or process) that wants to compare against or replace the same folder waits, at
    most ``wait_s`` seconds; then :class:`InputError`. The operating system releases the lock of a killed
    process.
    """
    from filelock import FileLock, Timeout

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir.parent / f".{out_dir.name}.lock"), thread_local=False)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise InputError(f"--out: {str(out_dir)!r} is locked by another training for over {wait_s:g} s; "
                         f"try again when it has finished") from None
    try:
        yield
    finally:
        lock.release()


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove staging folders of trainings into ``out_dir`` that were killed outright."""
    from predictor.atomic import remove_stale_temps

    remove_stale_temps(out_dir.parent, f"{out_dir.name}.staging")


def _recover_interrupted_swap(out_dir: Path) -> None:
    """A run killed between the two renames of :func:`_swap_in` leaves only ``.<name>.old``: put it back."""
    old = _old_dir(out_dir)
    if old.is_dir() and not out_dir.exists():
        os.replace(old, out_dir)


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``staging`` with renames (the old folder survives until the new one is in place).

    If the second rename fails (full disk, permissions), the old folder is renamed back before the error
    propagates; if the process is killed between the renames, the next run restores it
    (:func:`_recover_interrupted_swap`).
    """
    old = _old_dir(out_dir)
    _recover_interrupted_swap(out_dir)
    if old.exists():
        shutil.rmtree(old)
    moved = False
    if out_dir.exists():
        os.replace(out_dir, old)
        moved = True
    try:
        os.replace(staging, out_dir)
    except BaseException:
        if moved:
            os.replace(old, out_dir)
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _publish(staging: Path, out_dir: Path, metric: float, signature: str, force: bool) -> tuple[bool, str]:
    """Under the folder's lock: compare with the artifact in ``out_dir`` and swap ``staging`` in if it is
    better (or ``force``); return (replaced, reason)."""
    with artifact_lock(out_dir):
        replace, reason = _should_replace(out_dir, metric, signature, force)
        if replace:
            _swap_in(staging, out_dir)
    return replace, reason


def _write_staging(staging: Path, final, metadata: dict, evaluation: dict, samples: list, importance,
                   families: str | None) -> None:
    """Every file of the new artifact folder, each written atomically."""
    save_artifact(staging, final.booster_.model_to_string(), metadata, families)
    atomic_write(staging / EVALUATION_FILE, json.dumps(evaluation, indent=1, default=float) + "\n")
    with atomic_path(staging / SAMPLE_FILE) as tmp:
        pd.concat(samples, ignore_index=True).to_parquet(tmp, index=False, compression="zstd")
    atomic_write(staging / IMPORTANCE_FILE, importance.to_csv(index=False))


def train(config: TrainConfig | None = None, *, out_dir: str | Path | None = None, data_dir: str | Path | None = None,
          tracking_uri: str | None = None, tracking: bool = True, force: bool = False,
          progress: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
          data: TrainingData | None = None) -> TrainResult:
    """Run the whole training job (see the module docstring). Returns a :class:`TrainResult`.

    ``data`` lets a caller that already built the training table (tests, sweeps) skip rebuilding it.
    """
    config = config or TrainConfig()
    out_dir = Path(out_dir) if out_dir is not None else SHIPPED_DIR
    _check_out_dir(out_dir)
    if out_dir.parent.is_dir():
        with artifact_lock(out_dir):
            _recover_interrupted_swap(out_dir)
            _remove_stale_staging(out_dir)
    if tracking:
        from training.tracking import check_tracking_uri

        check_tracking_uri(tracking_uri)
    say = progress or (lambda msg: None)
    timing = {}
    t_start = time.perf_counter()

    say("loading data and building features")
    data = data if data is not None else load_training_data(data_dir)
    hashes = data_hashes(data_dir)
    timing["features"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    if config.search:
        chosen, scores = search(data, config.candidates, config.max_train_rows, config.seed, say)
    else:
        chosen, scores = dict(config.candidates[0]), []
    params = {**DEFAULT_PARAMS, **{k: v for k, v in chosen.items() if k != "rounds"}, "seed": config.seed}
    rounds = int(chosen["rounds"])
    timing["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    folds = _folds(data, config)
    signature = _split_signature(folds)
    split_results, samples = {}, []
    for split, split_folds in folds.items():
        metrics, pooled = run_split(data, split_folds, params, rounds, config.max_train_rows, config.seed, say)
        split_results[split] = metrics
        samples.append(_sample_predictions(pooled, config.sample_rows_per_split, config.seed))
    timing["evaluation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("fitting the final model on all rows")
    all_rows = np.arange(len(data))
    final_rows = all_rows if config.final_max_rows is None else balanced_sample(
        data.table, all_rows, config.final_max_rows, config.seed)
    final = ResidualModel(params, rounds).fit(data.X.iloc[final_rows], data.log_ratio[final_rows])
    timing["final_fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("fitting the kernel families")
    from training.kernel_families import fit_for_artifact

    families, families_info = fit_for_artifact(data, final.predict_log_ratio, params, rounds, config.seed,
                                               evaluate=not config.quick_mode,
                                               max_rows=config.final_max_rows or len(final_rows))
    timing["kernel_families"] = time.perf_counter() - t0

    from features.reference_data import read_cpu_overheads
    from predictor.overhead import fit_cpu_overheads

    cpu = read_cpu_overheads()
    overhead = fit_cpu_overheads(cpu[cpu["gpu"] == OVERHEAD_HOST])
    headline = summary_table(split_results)
    primary = headline["leave_one_model_out"]["hybrid"]["mdape"]
    metadata = {
        "format": "inference-sim residual model v1",
        "target": TARGET,
        "feature_names": list(final.features),
        "monotone_decreasing": list(final.monotone_decreasing),
        "categorical_features": list(CATEGORICAL_FEATURES),
        "params": params,
        "num_boost_round": rounds,
        "training_rows": int(len(final_rows)),
        "data_hashes": hashes,
        "sources": sorted(data.table["source"].astype(str).unique().tolist()),
        "training_gpus": sorted(data.table["gpu"].iloc[final_rows].astype(str).unique().tolist()),
        "metrics": headline,
        "split_signature": signature,
        "overhead": overhead.to_dict(),
        "overhead_source": f"Vidur cpu_overheads.csv, {OVERHEAD_HOST} host rows (predictor.overhead)",
        "quick": config.quick_mode,
        "library_versions": _library_versions(),
        "code_version": {"package": _package_version(), "git_commit": _git_commit()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"kernel_families": families_info} if families_info is not None else {}),
    }
    evaluation = {"splits": split_results, "search": scores, "chosen": chosen, "config": asdict(config),
                  "rows": int(len(data)), "data_hashes": hashes}
    importance = pd.DataFrame({"feature": list(final.features),
                               "gain": final.booster_.feature_importance("gain"),
                               "split": final.booster_.feature_importance("split")}).sort_values("gain", ascending=False)

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{out_dir.name}.staging"), suffix=".tmp",
                                        dir=out_dir.parent))
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(out_dir)) from err
    staging.chmod(0o755)  # mkdtemp makes it private; the artifact folder is meant to be shared
    try:
        _write_staging(staging, final, metadata, evaluation, samples, importance, families)
        load_artifact(staging, MODEL_FEATURES)  # verify what we wrote before it replaces anything
        replace, reason = _publish(staging, out_dir, primary, signature, force)
    except OSError as err:  # full disk, I/O error: name the artifact folder, which is as it was
        previous = "the previous artifact there is unchanged" if (out_dir / METADATA_FILE).exists() else \
            "nothing was written"
        raise OSError(err.errno, f"{err.strerror or err}; {previous}", str(out_dir)) from err
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    timing["total"] = time.perf_counter() - t_start

    tracker = Tracker(tracking_uri, enabled=tracking, warn=warn)
    tracker.start(run_name="quick" if config.quick_mode else "full", tags={"quick": str(config.quick_mode)})
    version, promoted = None, False
    if tracker.run_id is not None:
        say("logging to MLflow")
        tracker.log_params({
            **{f"lgbm.{k}": v for k, v in params.items()}, "num_boost_round": rounds,
            **{f"data.{k}.sha256": v for k, v in hashes.items()}, "data.sources": ",".join(metadata["sources"]),
            "data.rows": len(data), "split_signature": signature, "max_train_rows_per_fold": config.max_train_rows,
            "quick": config.quick_mode, "code_version": metadata["code_version"]["package"],
            "git_commit": metadata["code_version"]["git_commit"], "search_candidates": len(scores),
        })
        tracker.log_metrics({**flatten_metrics(split_results), **{f"timing/{k}_s": v for k, v in timing.items()}})
        with tempfile.TemporaryDirectory() as tmp:
            from training.report import write_report

            write_report(evaluation, pd.concat(samples, ignore_index=True), Path(tmp), metadata)
            importance.to_csv(Path(tmp) / IMPORTANCE_FILE, index=False)
            tracker.log_artifacts(tmp, "report")
            save_artifact(Path(tmp) / "artifact", final.booster_.model_to_string(), metadata, families)
            tracker.log_artifacts(Path(tmp) / "artifact", "artifact")
        version = tracker.log_model(final.booster_, data.X.iloc[:5], final.predict_log_ratio(data.X.iloc[:5]))
        promoted, _ = tracker.promote_if_better(version, PRIMARY_METRIC, primary, ("split_signature", signature))
        tracker.end()
    return TrainResult(metrics=headline, chosen=chosen, out_dir=str(out_dir), replaced=replace, reason=reason,
                       run_id=tracker.run_id, model_version=version, promoted=promoted,
                       tracking_error=tracker.error, timing_s=timing)


def _package_version() -> str:
    from inference_sim import __version__

    return __version__
